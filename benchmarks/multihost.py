"""One capture round over 3 hosts x 5 processes, over ssh, against the same 15 processes
captured locally (docs/capture.md, "Several hosts").

The hosts are the test harness's (tests/integration/simhosts.py): network, PID, mount and
UTS namespaces on a bridge, each with its own sshd. The 15 targets are Python processes that
wake every 10 ms. Root only. Run: python benchmarks/multihost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.simhosts import SimCluster, available, ns_pid  # noqa: E402

TARGET = "import time\nwhile True:\n    time.sleep(0.01)\n"


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO,
                         check=False)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed ({out.returncode}):\n{out.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--per-host", type=int, default=5)
    parser.add_argument("--remote-python", default="python3",
                        help="passed on; this machine's python3 on PATH is a pyenv shim (~70 ms)")
    args = parser.parse_args()
    why = available()
    if why:
        raise SystemExit(f"cannot run: {why}")
    with tempfile.TemporaryDirectory(prefix="pm-bench-hosts-") as tmp:
        sim = SimCluster(Path(tmp) / "sim")
        try:
            sim.start(3)
            root_pids: list[int] = []
            remote: list[str] = []
            for host in sim.hosts:
                for i in range(args.per_host):
                    proc = sim.spawn(host, [sys.executable, "-c", TARGET],
                                     Path(tmp) / f"{host.name}-{i}.log")
                    pid = sim.target_pid(proc)
                    root_pids.append(pid)
                    remote.append(f"{ns_pid(pid)}@{host.ip}")
            time.sleep(1)
            pm = [sys.executable, "-m", "postmortem", "capture", "--samples", "1",
                  "--interval", "0", "--force"]
            local = [*pm, *(a for p in root_pids for a in ("--pid", str(p))),
                     "-o", f"{tmp}/local"]
            ssh_flags = [a for o in sim.ssh_options() for a in ("--ssh-option", o)]
            ssh_flags += ["--remote-python", args.remote_python]
            hosts = [*sim.in_ctl(), *pm, *(a for p in remote for a in ("--pid", p)),
                     *ssh_flags, "-o", f"{tmp}/hosts"]
            # one host's share: what each host costs when hosts do not share CPUs
            first = [p for p in remote if p.endswith(f"@{sim.hosts[0].ip}")]
            one = [*sim.in_ctl(), *pm, *(a for p in first for a in ("--pid", p)),
                   *ssh_flags, "-o", f"{tmp}/one"]
            setup = [*sim.in_ctl(), *sim.ssh(), f"root@{sim.hosts[0].ip}", "true"]
            timed(hosts)  # warm: known_hosts written, page cache
            results: dict[str, list[float]] = {"local": [], "hosts": [], "one": [], "ssh": []}
            for _ in range(args.repeat):
                results["local"].append(timed(local))
                results["hosts"].append(timed(hosts))
                results["one"].append(timed(one))
                results["ssh"].append(timed(setup))
        finally:
            sim.close()
    median = {k: statistics.median(v) for k, v in results.items()}
    goal = 1.5 * median["local"] + median["ssh"]
    print(f"{len(root_pids)} processes on 3 hosts, 1 round, median of {args.repeat}:")
    print(f"  local capture (one host sees all 15):  {median['local']:.2f} s")
    print(f"  capture --host x3 over ssh:            {median['hosts']:.2f} s")
    print(f"  capture --host x1 (its 5 processes):   {median['one']:.2f} s")
    print(f"  one ssh connection setup (ssh true):   {median['ssh']:.2f} s")
    print(f"  goal 1.5 x local + one ssh setup:      {goal:.2f} s -> "
          f"{'met' if median['hosts'] <= goal else 'NOT met'} (3 hosts sharing this machine's "
          f"CPUs); {'met' if median['one'] <= goal else 'NOT met'} by one host's share")


if __name__ == "__main__":
    main()
