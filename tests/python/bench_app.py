"""The Celery app of `scripts/bench celery-ingress`: one no-op task, run by
Celery's own prefork worker and by weir's Python runner alike. Each run
counts its tasks in Redis (WEIR_BENCH_COUNTER) so the benchmark can tell
when the last one ended."""
import os

import redis
from celery import Celery

broker = os.environ.get("WEIR_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/14")
app = Celery("weirbench", broker=broker)
app.conf.broker_transport_options = {"global_keyprefix": os.environ.get("WEIR_BENCH_PREFIX", "")}
app.conf.task_ignore_result = True
app.conf.worker_prefetch_multiplier = 16
counter = redis.Redis.from_url(broker)


PREFIX = os.environ.get("WEIR_BENCH_PREFIX", "")
COUNTER = os.environ.get("WEIR_BENCH_COUNTER", "weirbench:done")


@app.task(name="bench.noop")
def noop():
    import time

    now = time.time()
    pipe = counter.pipeline()
    pipe.set(PREFIX + "first", now, nx=True)
    pipe.set(PREFIX + "last", now)
    pipe.incr(COUNTER)
    pipe.execute()
