import pickle
import threading
import time

import pytest

from lightning_featviz.runtime.worker import BackgroundWorker


def test_jobs_run_in_order_on_another_thread_and_drain_waits_for_all():
    worker, seen = BackgroundWorker(max_pending=2), []
    for i in range(5):
        worker.submit(lambda i=i: (time.sleep(0.01), seen.append((i, threading.current_thread().name))))
    worker.drain()
    assert [i for i, _ in seen] == list(range(5))
    assert all(name.startswith("featviz-report") for _, name in seen)
    assert not worker._pending  # nothing left queued
    worker.close()


def test_the_backlog_is_bounded():
    worker, gate = BackgroundWorker(max_pending=1), threading.Event()
    worker.submit(gate.wait)
    blocked = threading.Thread(target=worker.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(timeout=0.2)
    assert blocked.is_alive()  # the second submit waits for the first job
    gate.set()
    blocked.join(timeout=5)
    assert not blocked.is_alive()
    worker.close()


def test_a_failed_job_raises_on_the_callers_thread_and_the_next_job_is_still_queued():
    worker, seen = BackgroundWorker(max_pending=1), []  # one waiting job: the next submit waits for it
    worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # raised by the next call on this thread...
        worker.submit(lambda: seen.append("after"))
    worker.drain()
    assert seen == ["after"]  # ...but the new job was queued and ran
    worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        worker.drain()
    worker.close()


def test_close_without_waiting_drops_jobs_not_started_and_the_worker_pickles():
    worker, gate, seen = BackgroundWorker(max_pending=3), threading.Event(), []
    worker.submit(gate.wait)
    worker.submit(lambda: seen.append("never"))
    gate.set()
    worker.close(wait=False)
    assert seen == [] and not worker._pending
    copy = pickle.loads(pickle.dumps(worker))
    copy.submit(lambda: seen.append("copy"))
    copy.drain()
    assert seen == ["copy"]
    copy.close()
