"""Celery's side of the ingress tests: sends tasks with a real Celery app
(Redis transport, JSON) and reads their results with AsyncResult.

    python celery_producer.py send BROKER PREFIX N      -> one JSON line per task sent
    python celery_producer.py reject BROKER PREFIX      -> pickle, gzip, chord: their ids
    python celery_producer.py results BACKEND IDS_FILE   -> one JSON line per id
    python celery_producer.py priorities BROKER PREFIX  -> ten tasks, priorities 0-9, to mail
"""
import datetime
import json
import sys

from celery import Celery, chord


def app(broker, prefix, backend=None):
    a = Celery("weirtest", broker=broker, backend=backend or broker)
    a.conf.broker_transport_options = {"global_keyprefix": prefix}
    a.conf.task_serializer = "json"
    a.conf.accept_content = ["json", "pickle"]
    return a


def send(broker, prefix, n):
    a = app(broker, prefix)
    now = datetime.datetime.now(datetime.timezone.utc)
    for i in range(n):
        queue = "dataset" if i % 2 else "mail"
        options = {"queue": queue, "priority": i % 10}
        kind = "plain"
        eta_ms = None
        if i % 100 == 1:
            options["countdown"] = 3
            kind = "countdown"
            eta_ms = int((datetime.datetime.now(datetime.timezone.utc).timestamp() + 3) * 1000)
        elif i % 100 == 2:
            options["eta"] = now + datetime.timedelta(seconds=4)
            kind = "eta"
            eta_ms = int(options["eta"].timestamp() * 1000)
        elif i % 100 == 3:
            options["expires"] = now - datetime.timedelta(seconds=1)
            kind = "expired"
        elif i % 100 == 4:
            options["expires"] = 600
            kind = "expires_later"
        task = "weir.fail" if i % 100 == 5 else "weir.echo"
        if task == "weir.fail":
            kind = "fails"
            r = a.send_task(task, args=[], kwargs={}, **options)
        else:
            r = a.send_task(task, args=[i, "x"], kwargs={"n": i}, **options)
        print(json.dumps({"id": r.id, "i": i, "queue": queue, "priority": i % 10, "kind": kind, "eta_ms": eta_ms}))
    sys.stdout.flush()


def reject(broker, prefix):
    a = app(broker, prefix)
    out = {}
    out["pickle"] = a.send_task("weir.echo", args=[1], queue="mail", serializer="pickle").id
    out["gzip"] = a.send_task("weir.echo", args=[2], queue="mail", compression="gzip").id
    header = [a.signature("weir.echo", args=[3], queue="mail")]
    result = chord(header)(a.signature("weir.echo", queue="mail"))
    out["chord"] = result.parent.results[0].id if result.parent else None
    print(json.dumps(out))


def results(backend, ids_file):
    a = Celery("weirtest", broker=backend, backend=backend)
    for line in open(ids_file):
        task_id = line.strip()
        if not task_id:
            continue
        r = a.AsyncResult(task_id)
        try:
            value = r.get(timeout=60)
            print(json.dumps({"id": task_id, "state": r.state, "result": value}))
        except Exception as e:  # the task's failure, as Celery raises it
            print(json.dumps({"id": task_id, "state": r.state, "error": type(e).__name__, "message": str(e)}))
    sys.stdout.flush()


def priorities(broker, prefix):
    a = app(broker, prefix)
    for p in [0, 9, 3, 7, 5, 1, 8, 2, 6, 4]:
        r = a.send_task("weir.echo", args=[p], kwargs={}, queue="mail", priority=p)
        print(json.dumps({"id": r.id, "priority": p}))
    sys.stdout.flush()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "send":
        send(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "reject":
        reject(sys.argv[2], sys.argv[3])
    elif cmd == "priorities":
        priorities(sys.argv[2], sys.argv[3])
    elif cmd == "results":
        results(sys.argv[2], sys.argv[3])
