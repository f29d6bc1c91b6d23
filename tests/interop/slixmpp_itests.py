"""Runs slixmpp's own integration tests (`itests/` in its PyPI source distribution) against a
server on this machine, and prints one line per test: `PASS`, `FAIL`, `ERROR` or `SKIP`, then
a summary line. The tests connect to the domain of their accounts; here every connection goes
to HOST (STARTTLS on PORT, direct TLS on TLS_PORT) and trusts CAFILE, whatever they ask.

Usage: slixmpp_itests.py SDIST_DIR HOST PORT TLS_PORT CAFILE [TEST_FILE...]

The accounts and the conference service come from the environment, as slixmpp's CI has them:
CI_ACCOUNT1, CI_ACCOUNT1_PASSWORD, CI_ACCOUNT2, CI_ACCOUNT2_PASSWORD, CI_MUC_SERVER.
"""

import logging
import os
import ssl
import sys
import unittest
from importlib import import_module
from pathlib import Path

from slixmpp.clientxmpp import ClientXMPP

SDIST, HOST, PORT, TLS_PORT, CAFILE = sys.argv[1:6]
ONLY = sys.argv[6:]
PORT, TLS_PORT = int(PORT), int(TLS_PORT)

plain_init = ClientXMPP.__init__
plain_connect = ClientXMPP.connect


def init(self, *args, **kwargs):
    plain_init(self, *args, **kwargs)
    self.ssl_context = ssl.create_default_context(cafile=CAFILE)


def connect(self, host=None, port=None):
    # The tests' own addresses name their CI's server: the standard ports map to ours; any
    # other (a port meant to be closed) stays as asked, on our host.
    if port is None:
        direct = self.enable_direct_tls and not self.enable_starttls
        port = TLS_PORT if direct else PORT
    else:
        port = {5222: PORT, 5223: TLS_PORT}.get(port, port)
    return plain_connect(self, HOST, port)


ClientXMPP.__init__ = init
ClientXMPP.connect = connect

os.chdir(SDIST)
sys.path.insert(0, SDIST)
logging.basicConfig(level=100)
logging.disable(100)

files = [Path(f) for f in ONLY] or sorted(Path("itests").glob("test_*.py"))
suites = [import_module(".".join(f.parts[:-1] + (f.stem,))).suite for f in files]


class Lines(unittest.TextTestResult):
    def addSuccess(self, test):
        super().addSuccess(test)
        print(f"PASS {test.id()}", flush=True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        print(f"FAIL {test.id()}: {err[1]}".splitlines()[0], flush=True)

    def addError(self, test, err):
        super().addError(test, err)
        print(f"ERROR {test.id()}: {err[0].__name__} {err[1]}".splitlines()[0], flush=True)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        print(f"SKIP {test.id()}: {reason}", flush=True)


runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=0, resultclass=Lines)
result = runner.run(unittest.TestSuite(suites))
passed = result.testsRun - len(result.failures) - len(result.errors) - len(result.skipped)
print(
    f"SUMMARY ran={result.testsRun} passed={passed} failed={len(result.failures)} "
    f"errors={len(result.errors)} skipped={len(result.skipped)}",
    flush=True,
)
