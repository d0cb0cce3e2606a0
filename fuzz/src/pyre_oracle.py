"""The oracle of the pyre differential fuzzer: CPython's `re`, driven over JSON lines.

The first line written is a greeting with the Unicode and Python versions. Then each request
line is a JSON array of cases {"p": pattern, "f": flags, "s": [inputs]}; the answer line has one
result per case, either {"err": exception class name, "msg": str(exception)} or {"m": [...]}
with, per input, [search, match, finditer]: search and match are null or the list of every
group's [start, end] (null for a group that did not take part), finditer is the list of those.
A compile or match that runs longer than the alarm is reported as "timeout" (Python has no step
budget; the fuzzer skips those instead of hanging); a match that makes CPython raise its internal
SystemError about a group's span as "systemerror".
"""

import json
import os
import re
import signal
import sys
import unicodedata
import warnings

# "Possible nested set" and friends are FutureWarnings on stderr: noise, not results.
warnings.simplefilter("ignore")


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout()


signal.signal(signal.SIGALRM, on_alarm)
ALARM = 0.5


def spans(m, groups):
    if m is None:
        return None
    out = []
    for i in range(groups + 1):
        s = m.span(i)
        out.append(None if s == (-1, -1) else list(s))
    return out


def one(case):
    try:
        signal.setitimer(signal.ITIMER_REAL, ALARM)
        try:
            rx = re.compile(case["p"], case["f"])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Timeout:
        return "timeout"
    except Exception as e:  # re.error, OverflowError, ValueError, RecursionError, ...
        return {"err": type(e).__name__, "msg": str(e)}
    results = []
    for s in case["s"]:
        try:
            signal.setitimer(signal.ITIMER_REAL, ALARM)
            try:
                results.append(
                    [
                        spans(rx.search(s), rx.groups),
                        spans(rx.match(s), rx.groups),
                        [spans(m, rx.groups) for m in rx.finditer(s)],
                    ]
                )
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Timeout:
            results.append("timeout")
        except SystemError:
            # "The span of capturing group is wrong, please report a bug for the re module":
            # CPython 3.11's possessive repeats leave group marks inconsistent
            # (python/cpython#101955, fixed after 3.11 went security-only).
            results.append("systemerror")
    return {"m": results}


def main():
    # re.DEBUG (flag 128) prints the parsed pattern with print(): keep the protocol on the
    # real stdout and throw away anything else printed.
    protocol = sys.stdout
    sys.stdout = open(os.devnull, "w")
    hello = {"unicode": unicodedata.unidata_version, "python": list(sys.version_info[:2])}
    print(json.dumps(hello), file=protocol, flush=True)
    for line in sys.stdin:
        print(json.dumps([one(c) for c in json.loads(line)]), file=protocol, flush=True)


main()
