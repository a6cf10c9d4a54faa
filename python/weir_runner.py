"""weir's Python runner: runs Celery task bodies for a weir worker.

The worker starts it as `python -c <this file>` with WEIR_PYTHON_APP set to
`module:attribute` (the Celery app), imports the app once, and speaks JSON
lines with it on the runner's stdin and on a copy of its original stdout
(a task's print goes to stderr, never into the protocol):

    runner -> {"op": "ready", "pid", "python", "celery", "tasks": [{"name", "max_retries", "default_retry_delay"}]}
    weir   -> {"op": "run", "seq", "task", "args", "kwargs", "request": {"id", "retries", ...}}
    runner -> {"op": "progress", "seq", "value": {"state", "meta"}}   (self.update_state, any number)
    runner -> {"op": "done", "seq", "result"}
            | {"op": "retry", "seq", "countdown_ms", "error"}
            | {"op": "failed", "seq", "exc_type", "exc_module", "message", "traceback", "retry": false}

One task at a time. Tasks are called as Celery's worker calls them: with
their request pushed (so self.request.id and self.retry() work), through
the task's own __call__ when its class overrides it (Flask app contexts).
A soft time limit (the request's, else the task's) raises
SoftTimeLimitExceeded inside the task, as Celery's prefork pool does.
"""
import datetime
import importlib
import json
import os
import signal
import sys
import traceback

proto = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr


def send(message):
    proto.write(json.dumps(message, default=str) + "\n")
    proto.flush()


def load_app():
    spec = os.environ.get("WEIR_PYTHON_APP", "")
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise SystemExit("WEIR_PYTHON_APP is not set: name the Celery app as module:attribute")
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app")
    if not hasattr(app, "tasks") and hasattr(app, "celery"):
        app = app.celery
    app.loader.import_default_modules()
    app.finalize(auto=True)
    return app


def countdown_ms(when):
    if when is None:
        return 0
    if isinstance(when, datetime.datetime):
        now = datetime.datetime.now(when.tzinfo or datetime.timezone.utc)
        return max(0, int((when - now).total_seconds() * 1000))
    return max(0, int(float(when) * 1000))


def main():
    import celery
    from celery.app.task import Task
    from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded

    def soft_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    signal.signal(signal.SIGALRM, soft_limit)

    app = load_app()
    tasks = [
        {"name": name, "max_retries": t.max_retries, "default_retry_delay": t.default_retry_delay}
        for name, t in sorted(app.tasks.items())
        if not name.startswith("celery.")
    ]
    send({"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0],
          "celery": celery.__version__, "tasks": tasks})
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        seq = message.get("seq")
        task = app.tasks.get(message.get("task"))
        if task is None:
            send({"op": "failed", "seq": seq, "exc_type": "NotRegistered", "exc_module": "celery.exceptions",
                  "message": "task %r is not registered in %s" % (message.get("task"), os.environ.get("WEIR_PYTHON_APP")),
                  "traceback": ""})
            continue
        args = message.get("args") or []
        kwargs = message.get("kwargs") or {}
        request = message.get("request") or {}
        task.push_request(
            id=request.get("id"), retries=request.get("retries", 0), called_directly=False,
            is_eager=True, args=args, kwargs=kwargs, delivery_info=request.get("delivery_info") or {},
            root_id=request.get("root_id"), parent_id=request.get("parent_id"),
            group=request.get("group"), hostname=request.get("hostname"),
        )
        def update_state(task_id=None, state=None, meta=None, **_):
            send({"op": "progress", "seq": seq, "value": {"state": state, "meta": meta}})

        task.update_state = update_state
        soft = request.get("soft_time_limit") or getattr(task, "soft_time_limit", None)
        if soft:
            signal.setitimer(signal.ITIMER_REAL, float(soft))
        try:
            if type(task).__call__ is not Task.__call__:
                result = task(*args, **kwargs)
            else:
                result = task.run(*args, **kwargs)
            send({"op": "done", "seq": seq, "result": result})
        except Retry as r:
            error = "%s: %s" % (type(r.exc).__name__, r.exc) if r.exc is not None else "retry requested"
            send({"op": "retry", "seq": seq, "countdown_ms": countdown_ms(r.when), "error": error})
        except Ignore:
            send({"op": "done", "seq": seq, "result": None})
        except Reject as r:
            send({"op": "failed", "seq": seq, "exc_type": "Reject", "exc_module": "celery.exceptions",
                  "message": str(r.reason), "traceback": ""})
        except Exception as e:
            send({"op": "failed", "seq": seq, "exc_type": type(e).__name__,
                  "exc_module": type(e).__module__, "message": str(e),
                  "traceback": traceback.format_exc()})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            del task.update_state
            task.pop_request()


main()
