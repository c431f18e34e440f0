#!/usr/bin/env python3
"""Drain or idle with data queued (issue 12: close_notify comes last).

A client asks for a large body and stops reading (idle timeout), or reads it slowly (drain
deadline after SIGTERM). When the deadline ends the connection with data still queued,
the client must be able to tell that the body was cut: reading every record afterwards, the
stream may end with close_notify only if every byte arrived. Otherwise it must end without one
(FIN or reset), so a close-delimited body never looks complete.
"""

import signal
import sys

from hostile import RECORD_PATH, PeerRun, main
from harness import LocalhostTestCase

BODY = 32 * 1024 * 1024  # far more than every buffer between the backend and a stalled client


class DataQueuedAtTheEndTest(LocalhostTestCase):
    def stalled_download(self, extra, end, reader=("wait-stdin", "read-close"), exits=False):
        backend = self.start_backend("http")
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key] + extra)
        run = PeerRun(proxy.port, ["request:GET /bytes/%d HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % BODY,
                                   # The answer flows before the deadline can come.
                                   "read:65536", "mark:stalled"] + list(reader),
                      cafile=self.ca.cert, options=["--rcvbuf", "16384", "--timeout", "30"])
        try:
            run.wait_event("mark")
            end(proxy)
            [entry] = proxy.wait_access(timeout=30)
            [res] = run.results(timeout=120)  # read every record the proxy sent, to its end
        finally:
            run.kill()
            # After a drain the proxy exits by itself: reap it here, so that the harness does not
            # take it for a crash.
            stopped = proxy.stop(timeout=30) if exits else None
        if exits:
            self.assertEqual(stopped, (0, False), "after the drain: exit 0 on its own\n" + proxy.diag())
        where = "%s path: %d of %d+ bytes, then %s\naccess: %r\n%s" % (
            RECORD_PATH, res["app_bytes"], BODY, res["close"], entry, run.describe())
        sys.stderr.write(where.split("\n")[0] + " (access close=%s bytes_down=%s)\n" % (entry["close"], entry["bytes_down"]))
        self.assertTrue(res["ok"], where)
        self.assertLess(entry["bytes_down"], BODY, "the test needs data queued at the end: " + where)
        self.assertNotEqual(res["close"], "close_notify",
                            "close_notify after a truncated body: the cut is invisible to the client: " + where)
        self.assertIn(res["close"], ("fin", "rst"), where)
        return entry

    def test_idle_timeout_with_data_queued(self):
        e = self.stalled_download(["--idle-timeout", "1s"], lambda proxy: None)
        self.assertEqual(e["close"], "idle_timeout", e)

    def test_drain_deadline_with_data_queued(self):
        def sigterm(proxy):
            proxy.send_signal(signal.SIGTERM)
            proxy.wait_line("stderr", r"draining", what="the drain announcement")

        # A slow reader that keeps reading: the proxy's socket has room when the deadline comes,
        # while its relay still holds records (the case where close_notify could slip out first).
        self.stalled_download(["--drain-timeout", "1s"], sigterm, reader=("read-paced:16384:10",), exits=True)


if __name__ == "__main__":
    sys.exit(main(__name__))
