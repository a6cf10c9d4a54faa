"""A Celery app whose tasks run in weir's Python runner in the tests."""
import os

from celery import Celery, Task


class ContextTask(Task):
    """Like Dify's FlaskTask: its own __call__ wraps the body."""

    def __call__(self, *args, **kwargs):
        os.environ["WEIR_TEST_WRAPPED"] = "yes"
        try:
            return self.run(*args, **kwargs)
        finally:
            os.environ.pop("WEIR_TEST_WRAPPED", None)


app = Celery("weirtest_tasks", task_cls=ContextTask)


@app.task(bind=True, name="py.add")
def add(self, a, b):
    print("adding", a, b)  # must not break the protocol
    return {"sum": a + b, "id": self.request.id, "pid": os.getpid(),
            "wrapped": os.environ.get("WEIR_TEST_WRAPPED")}


@app.task(bind=True, name="py.flaky", max_retries=5)
def flaky(self, failures):
    if self.request.retries < failures:
        raise self.retry(countdown=0.2, exc=RuntimeError("not yet"))
    return {"retries": self.request.retries}


@app.task(bind=True, name="py.hopeless", max_retries=1)
def hopeless(self):
    raise self.retry(countdown=0.1, exc=RuntimeError("never"))


@app.task(name="py.boom")
def boom():
    raise ValueError("boom")


@app.task(name="py.crash")
def crash():
    os._exit(3)


@app.task(bind=True, name="py.report")
def report(self):
    self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
    return "reported"


@app.task(name="py.slow", soft_time_limit=0.3)
def slow():
    import time

    from celery.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "slept"
