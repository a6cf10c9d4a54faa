-- Reserves $3[i] fair-share numbers for each (queue $1[i], tenant $2[i]):
-- `last` moves to the later of its old value and the queue's clock, plus
-- the count. ON CONFLICT reads the committed `last` under the row's lock,
-- so concurrent enqueuers never share a number; rows go in sorted order,
-- so concurrent multi-row upserts never deadlock.
INSERT INTO fair AS f (queue, tenant, last)
SELECT k.queue, k.tenant, coalesce(c.clock, 0) + k.n
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(queue, tenant, n)
LEFT JOIN clocks AS c ON c.queue = k.queue
ORDER BY k.queue, k.tenant
ON CONFLICT (queue, tenant) DO UPDATE
SET last = greatest(f.last, coalesce((SELECT clock FROM clocks WHERE queue = EXCLUDED.queue), 0))
         + (EXCLUDED.last - coalesce((SELECT clock FROM clocks WHERE queue = EXCLUDED.queue), 0))
RETURNING f.queue, f.tenant, f.last
