-- The window a listing examines: the newest ?3 jobs (of tenant ?1, or of
-- everyone when NULL) older than the cursor ?2. Its oldest id and size.
SELECT MIN(id), COUNT(*) FROM (
  SELECT id FROM jobs
  WHERE tenant = ?1 AND id < ?2
  ORDER BY id DESC
  LIMIT ?3
)
