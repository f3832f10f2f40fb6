"""A synthetic dump of a big hung job, in the exact format `postmortem capture` writes.

    python benchmarks/synthetic.py OUT_DIR [--processes 1000] [--rounds 5] [--seed 0]
                                   [--compress/--no-compress] [--schema 5|3]

`make_dump(path, processes, rounds, seed)` replicates the real processes of
samples/ps-frozen-during-save (a ps and a worker of a TF1 between-graph job, captured on
a 2-core VM) into one job of `processes` members: 1 ps per 20 processes, the rest workers,
worker:0 the chief. Every process keeps the real shape:

* ~100 kernel threads with the template's names and wait channels (python3.11,
  event_engine, tf_Compute, grpc_global_tim, lifeguard, grpcpp_sync_ser, tf_graph_runner),
  a few of them using a little CPU between rounds;
* the real py-spy JSON, with the stacks a MonitoredTrainingSession job has: the main thread
  20-25 frames deep (session.run under the hooked/coordinated/recoverable sessions, the
  job's own trainer frames, absl's app.run), plus EventLoggerThread, QueueRunner threads and
  the Coordinator's LooperThread on workers;
* sources.json with the 40 lines above each frame, as the capture keeps them (schema 5: one
  file for the dump; 3: one per process);
* sockets: each worker holds a gRPC connection to every ps (both ends are in the dump),
  each process listens on its own port, `host_listening` lists every listening address of
  the host (all targets of a dump are local to the capturing host);
* `--ps_hosts` / `--worker_hosts` listing every member in every command line;
* a stderr tail with TF's start-up lines and step lines.

The hang: ps:K (K from the seed) is SIGSTOPped (state T with every thread in
do_signal_stop, every round); the chief's main thread is in Saver.save -> session.run and
every other worker's main thread in session.run of the train op. The expected verdict is
peer-unresponsive with culprit ps:K; `make_dump` returns it (and writes truth.json, as the
samples have). Same seed, same bytes (but for the output path in the manifest's `command`).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collectors import layout
from collectors.capture import COMPRESS_FROM
from collectors.dump import gzip_dump
from collectors.procfs import columns

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "samples" / "ps-frozen-during-save"  # a ps and a worker, real capture
THREADS_SAMPLE = REPO / "samples" / "sync-replicas-stall"  # its chief: the helper threads
PY = "/root/.pyenv/versions/3.11.7/lib/python3.11"
SP = f"{PY}/site-packages"
EXE = "/root/.pyenv/versions/3.11.7/bin/python3.11"
JOB = "/srv/job"
TRAIN_PY = f"{JOB}/trainer/train.py"
LOOP_PY = f"{JOB}/trainer/loop.py"
CKPT_DIR = f"{JOB}/ckpt"
MONITORED = f"{SP}/tensorflow/python/training/monitored_session.py"
HOOKS = f"{SP}/tensorflow/python/training/basic_session_run_hooks.py"
ABSL_APP = f"{SP}/absl/app.py"
TF_APP = f"{SP}/tensorflow/python/platform/app.py"
SERVER_LIB = f"{SP}/tensorflow/python/training/server_lib.py"
INTERVAL = 1.5  # seconds between rounds, as the samples were captured
STARTED_AT = 1795441340.0
GLOBAL_STEP = 12_480

Frame = tuple[str, str, int, str]  # function, filename, line, source text at the line

# Outer frames of a MonitoredTrainingSession step (innermost first), line numbers and text
# as in tensorflow-cpu 2.21 / absl-py; the trainer frames are the job's own code.
MONITORED_RUN: list[Frame] = [
    ("_CoordinatedSession.run", MONITORED, 1397, "      return self._sess.run(*args, **kwargs)"),
    ("_RecoverableSession.run", MONITORED, 1307, "        return self._sess.run("),
    ("_MonitoredSession.run", MONITORED, 778, "    return self._sess.run("),
]
TRAINER: list[Frame] = [
    ("Trainer.train_step", LOOP_PY, 88, "        _, loss, step = sess.run(self.fetches)"),
    ("Trainer.run_epoch", LOOP_PY, 121, "            loss, step = self.train_step(sess)"),
    ("Trainer.fit", LOOP_PY, 164, "                self.run_epoch(sess, epoch)"),
    ("train_with_restarts", LOOP_PY, 201, "            return trainer.fit(session_factory())"),
    ("main", TRAIN_PY, 203, "    train_with_restarts(build_trainer(FLAGS), FLAGS.max_restarts)"),
    ("_run_main", ABSL_APP, 355, "    sys.exit(main(argv))"),
    ("run", ABSL_APP, 410, "      _run_main(main, args)"),
    ("run", TF_APP, 36, "  _run(main=main, argv=argv, flags_parser=_parse_flags_tolerate_undef)"),
    ("<module>", TRAIN_PY, 240, "  tf.compat.v1.app.run(main)"),
]
TRAIN_STEP: list[Frame] = [
    ("_WrappedSession.run", MONITORED, 1228, "    return self._sess.run(*args, **kwargs)"),
    ("_HookedSession.run", MONITORED, 1464, "    outputs = _WrappedSession.run("),
]
SAVE_IN_HOOK: list[Frame] = [
    ("CheckpointSaverHook._save", HOOKS, 633,
     "    self._get_saver().save(session, self._save_path,"),
    ("CheckpointSaverHook.after_run", HOOKS, 615, "        if self._save(run_context.session,"),
    ("_HookedSession.run", MONITORED, 1472, "      hook.after_run("),
]
PS_MAIN: list[Frame] = [
    ("main", TRAIN_PY, 188, "        server.join()"),
    *TRAINER[-4:],
]
FILLER = (
    "",
    "    Args:",
    "      fetches: A single graph element, or a list of graph elements.",
    "    if self._closed:",
    "      raise RuntimeError('Attempted to use a closed Session.')",
    "    # Keep going until the coordinator asks us to stop.",
    "    options_ptr = tf_session.TF_NewBufferFromString(",
    "    results = self._fetch_handler.build_results(self, results)",
    "    return self._coordinated_creator.tf_sess",
    "  @property",
    "  def graph(self):",
    "    feed_dict = feed_dict or {}",
    "    logging.vlog(1, 'step %d', step)",
    "      step_context = _StepContext(self._tf_sess(), self.run)",
)


def _short(filename: str) -> str:
    for prefix in (f"{SP}/", f"{PY}/", f"{JOB}/"):
        if filename.startswith(prefix):
            return filename[len(prefix) :]
    return filename


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _pids(dump: Path) -> list[int]:
    return [int(t["pid"]) for t in _read(dump / layout.MANIFEST)["targets"]]


class Templates:
    """What the real captures hold, read once from the committed samples."""

    def __init__(self) -> None:
        procs: dict[str, int] = {}
        for pid in _pids(TEMPLATE):
            info = _read(TEMPLATE / layout.process_file(pid))
            procs["ps" if "--job_name=ps" in info["cmdline"] else "worker"] = pid
        chief = next(
            pid for pid in _pids(THREADS_SAMPLE)
            if "--task_index=0" in _read(THREADS_SAMPLE / layout.process_file(pid))["cmdline"]
            and "--job_name=worker" in _read(THREADS_SAMPLE / layout.process_file(pid))["cmdline"])
        self.procfs = {r: _read(TEMPLATE / layout.procfs_file(p, 0)) for r, p in procs.items()}
        self.process = {r: _read(TEMPLATE / layout.process_file(p)) for r, p in procs.items()}
        self.stderr = {r: (TEMPLATE / layout.std_stream_file(p, "stderr")).read_text()
                       for r, p in procs.items()}
        self.sources: dict[str, dict[str, str]] = {}
        for root, pid in [*((TEMPLATE, p) for p in procs.values()), (THREADS_SAMPLE, chief)]:
            for filename, lines in _read(root / layout.sources_file(pid)).items():
                self.sources.setdefault(filename, {}).update(lines)
        worker_spy = _read(TEMPLATE / layout.pyspy_file(procs["worker"], 0))
        main = next(t for t in worker_spy if t["thread_name"] == "MainThread")
        # session.run chain (6 frames) and Saver.save, as py-spy printed them.
        chain = [_frame_of(f, self.sources) for f in main["frames"]]
        self.session_run = chain[:6]
        self.saver_save = chain[6]
        ps_spy = _read(TEMPLATE / layout.pyspy_file(procs["ps"], 0))
        self.server_join = _frame_of(ps_spy[0]["frames"][0], self.sources)
        helpers = {t["thread_name"]: t
                   for t in _read(THREADS_SAMPLE / layout.pyspy_file(chief, 0))}
        self.event_logger = [_frame_of(f, self.sources) for f in
                             next(t for t in worker_spy if t["thread_name"] == "EventLoggerThread")
                             ["frames"]]
        self.looper = [_frame_of(f, self.sources) for f in helpers["Thread-1"]["frames"]]
        self.queue_close = [_frame_of(f, self.sources) for f in
                            helpers["QueueRunnerThread-sync_token_q-close_on_stop"]["frames"]]
        enqueue = helpers["QueueRunnerThread-sync_token_q-sync_token_q_EnqueueMany"]
        self.queue_enqueue = [_frame_of(f, self.sources) for f in enqueue["frames"]]


def _frame_of(raw: dict[str, Any], sources: dict[str, dict[str, str]]) -> Frame:
    filename, line = str(raw["filename"]), int(raw["line"])
    return (str(raw["name"]), filename, line, sources.get(filename, {}).get(str(line), ""))


def _source_window(frame: Frame, known: dict[str, dict[str, str]], out: dict[str, dict[str, str]]
                   ) -> None:
    """The 40 lines above a frame's line and the line itself, as the capture keeps them."""
    _, filename, line, text = frame
    real = known.get(filename, {})
    lines = out.setdefault(filename, {})
    for number in range(max(1, line - 40), line + 1):
        key = str(number)
        if key in lines:
            continue
        if number == line and text:
            lines[key] = text
        elif key in real:
            lines[key] = real[key]
        else:
            lines[key] = FILLER[(number * 7 + len(filename)) % len(FILLER)]


def _pyspy_thread(pid: int, tid: int, name: str, frames: list[Frame], rng: random.Random
                  ) -> dict[str, Any]:
    out = []
    last = len(frames) - 1
    for depth, (function, filename, line, _) in enumerate(frames):
        shim = depth == last and function in ("<module>", "Thread._bootstrap")
        out.append({
            "name": function,
            "filename": filename,
            "module": None,
            "short_filename": _short(filename),
            "line": line,
            "locals": None,
            "is_entry": depth == last,
            "is_shim_entry": shim,
        })
    return {
        "pid": pid,
        "thread_id": 139_800_000_000_000 + rng.randrange(10**12),
        "thread_name": name,
        "os_thread_id": tid,
        "active": False,
        "owns_gil": False,
        "frames": out,
    }


class Job:
    """The cluster: who is who, where it listens, which pid and tids it has."""

    def __init__(self, processes: int, rounds: int, seed: int, tpl: Templates) -> None:
        self.rng = random.Random(seed)
        self.tpl = tpl
        self.rounds = rounds
        self.num_ps = max(1, processes // 20)
        self.num_workers = max(1, processes - self.num_ps)
        self.roles = [("ps", i) for i in range(self.num_ps)]
        self.roles += [("worker", i) for i in range(self.num_workers)]
        self.culprit = self.rng.randrange(self.num_ps)
        # Listening ports below the ephemeral range, connection ports in it: no clashes.
        ports = self.rng.sample(range(2200, 32000), len(self.roles))
        self.port = dict(zip(self.roles, ports, strict=True))
        self.address = {r: f"127.0.0.1:{p}" for r, p in self.port.items()}
        # pids and tids share one number space: leave each process room for its threads.
        self.pid: dict[tuple[str, int], int] = {}
        next_pid = 20_000 + self.rng.randrange(5_000)
        for role in self.roles:
            self.pid[role] = next_pid
            next_pid += 480 + self.rng.randrange(200)
        ps_hosts = ",".join(self.address[("ps", i)] for i in range(self.num_ps))
        worker_hosts = ",".join(self.address[("worker", i)] for i in range(self.num_workers))
        self.flags = [f"--ps_hosts={ps_hosts}", f"--worker_hosts={worker_hosts}"]
        self.listening = ["0.0.0.0:2024", *(f":::{p}" for p in sorted(ports))]
        # One gRPC channel from every worker to every ps: (worker, ps) -> ephemeral port.
        self.conn_port = {
            (w, p): self.rng.randrange(32768, 61000)
            for w in range(self.num_workers)
            for p in range(self.num_ps)
        }
        self.ppid = 19_000 + self.rng.randrange(900)

    def label(self, role: tuple[str, int]) -> str:
        return f"{role[0]}:{role[1]}"

    def stopped(self, role: tuple[str, int]) -> bool:
        return role == ("ps", self.culprit)


class ProcessWriter:
    """Everything one process contributes to the dump: process.json, rounds, logs."""

    def __init__(self, job: Job, role: tuple[str, int]) -> None:
        self.job, self.role = job, role
        self.tpl = job.tpl
        self.rng = random.Random(f"{job.rng.random()}-{role}")
        self.pid = job.pid[role]
        self.kind = "ps" if role[0] == "ps" else "worker"
        self.chief = role == ("worker", 0)
        self.threads = self._kernel_threads()
        self.py_threads = self._python_threads()

    # -- identity ------------------------------------------------------------------------

    def process_json(self) -> dict[str, Any]:
        info = copy.deepcopy(self.tpl.process[self.kind])
        job, (name, index) = self.job, self.role
        info.update(pid=self.pid, ppid=job.ppid, pgid=self.pid, exe=EXE, cwd=JOB)
        info["starttime_ticks"] = 250_000 + index + (0 if name == "ps" else job.num_ps)
        info["cmdline"] = [
            EXE, "-u", TRAIN_PY, f"--job_name={name}", f"--task_index={index}", *job.flags,
            f"--checkpoint_dir={CKPT_DIR}", "--save_checkpoint_secs=600",
            "--batch_size=256", "--learning_rate=0.01", "--max_restarts=3",
        ]
        return dict(info)

    # -- threads -------------------------------------------------------------------------

    def _kernel_threads(self) -> list[dict[str, Any]]:
        template = self.tpl.procfs[self.kind]
        base = int(template["pid"])
        threads = []
        for t in template["threads"]:
            offset = int(t["tid"]) - base
            if offset and t["name"] == "python3.11" and self.rng.random() < 0.06:
                continue  # thread counts vary a little between processes
            threads.append({**t, "tid": self.pid + offset})
        extra = self.rng.randrange(0, 8)
        used = {t["tid"] for t in threads}
        for _ in range(extra):
            tid = self.pid + 1 + self.rng.randrange(470)
            if tid not in used:
                used.add(tid)
                threads.append({"tid": tid, "name": "python3.11", "state": "S",
                                "wchan": "futex_do_wait", "utime": 0, "stime": 0})
        threads.sort(key=lambda t: t["tid"])
        for t in threads:
            if self.job.stopped(self.role):
                t.update(state="T", wchan="do_signal_stop")
            else:
                t["state"] = "S"
                if t["wchan"] == "do_signal_stop":
                    t["wchan"] = "futex_do_wait"
        return threads

    def _python_threads(self) -> list[tuple[int, str, list[Frame]]]:
        """(tid, name, frames innermost first) of each Python thread."""
        tpl = self.tpl
        others = [t["tid"] for t in self.threads if t["tid"] != self.pid
                  and t["name"].startswith("python")]
        self.rng.shuffle(others)
        # Fewer such threads in the template than Python threads to place: new ones.
        spare = max(t["tid"] for t in self.threads) + 1
        for offset in range(6):
            others.insert(0, spare + offset)
            self.threads.append({**self.threads[0], "tid": spare + offset, "name": "python3.11"})
        if self.kind == "ps":
            return [(self.pid, "MainThread", [tpl.server_join, *PS_MAIN])]
        if self.chief:
            main = [*tpl.session_run, tpl.saver_save, *SAVE_IN_HOOK, *MONITORED_RUN, *TRAINER]
        else:
            main = [*tpl.session_run, *TRAIN_STEP, *MONITORED_RUN, *TRAINER]
        out = [(self.pid, "MainThread", main)]
        queue = "input_producer"
        out.append((others.pop(), f"QueueRunnerThread-{queue}-{queue}_EnqueueMany",
                    tpl.queue_enqueue))
        out.append((others.pop(), f"QueueRunnerThread-{queue}-close_on_stop", tpl.queue_close))
        out.append((others.pop(), "Thread-1", tpl.looper))
        if self.chief:
            out.append((others.pop(), "EventLoggerThread", tpl.event_logger))
            out.append((others.pop(), "Thread-2", tpl.looper))
        return out

    def sources_json(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for _, _, frames in self.py_threads:
            for frame in frames:
                _source_window(frame, self.tpl.sources, out)
        return out

    # -- one round -----------------------------------------------------------------------

    def rounds(self) -> Iterator[tuple[int, dict[str, Any], list[dict[str, Any]]]]:
        """(round, procfs.json, pyspy.json) for each round."""
        job, tpl = self.job, self.tpl.procfs[self.kind]
        stopped = job.stopped(self.role)
        # Timer and event-engine threads of a live process tick on while it is stuck.
        tickers = [t for t in self.threads if t["name"] in ("event_engine", "grpc_global_tim",
                                                            "tf_Compute", "lifeguard")]
        utime, stime = int(tpl["utime"]), int(tpl["stime"])
        rss = int(tpl["rss_bytes"]) + self.rng.randrange(-40, 40) * 2**20
        threads = copy.deepcopy(self.threads)
        by_tid = {t["tid"]: t for t in threads}
        for index in range(job.rounds):
            if index and not stopped:
                for t in tickers:
                    if self.rng.random() < 0.5:
                        t["utime"] += 1
                        utime += 1
                    if self.rng.random() < 0.2:
                        t["stime"] += 1
                        stime += 1
            time = STARTED_AT + index * INTERVAL + 0.002 * (self.pid % 97)
            procfs = {
                "pid": self.pid,
                "time": time,
                "state": "T" if stopped else "S",
                "utime": utime,
                "stime": stime,
                "num_threads": len(threads),
                "clk_tck": 100,
                "host_listening": job.listening,
                "rss_bytes": rss,
                "threads": [dict(by_tid[t["tid"]]) for t in threads],
                "io": dict(tpl["io"]),
                "files": self._files(index),
                "sockets": self._sockets(),
                "fds_error": "",
            }
            spy = []
            for tid, name, frames in self.py_threads:
                if name.startswith("Thread-"):  # Condition.wait(timeout): two lines alternate
                    first = frames[0]
                    frames = [(first[0], first[1], 327 if (index + tid) % 2 else 331, first[3]),
                              *frames[1:]]
                spy.append(_pyspy_thread(self.pid, tid, name, frames, random.Random(tid)))
            spy.reverse()  # py-spy lists the main thread last
            yield index, procfs, spy

    def _files(self, index: int) -> list[dict[str, Any]]:
        label = self.job.label(self.role).replace(":", "-")
        err_size = len(self.stderr().encode())
        files = [
            {"fd": 0, "path": "/dev/null", "size": None, "pos": 0, "flags": "0100002"},
            {"fd": 1, "path": f"{JOB}/logs/{label}.stdout.log", "size": 0, "pos": 0,
             "flags": "0100001", "mtime": STARTED_AT - 3600},
            {"fd": 2, "path": f"{JOB}/logs/{label}.stderr.log", "size": err_size,
             "pos": err_size, "flags": "0100001", "mtime": STARTED_AT - 30},
        ]
        if self.chief:
            files += [
                {"fd": 9, "path": f"{CKPT_DIR}/events.out.tfevents.1795400000.vm",
                 "size": 5_518_100, "pos": 5_518_100, "flags": "0100001",
                 "mtime": STARTED_AT - 31},
                {"fd": 14, "path": f"{CKPT_DIR}/model.ckpt-{GLOBAL_STEP}_temp/"
                 "part-00000-of-00001.data-00000-of-00001", "size": 0, "pos": 0,
                 "flags": "0100001", "mtime": STARTED_AT - 30},
            ]
        return files

    def _sockets(self) -> list[dict[str, Any]]:
        job, (name, index) = self.job, self.role
        port = job.port[self.role]
        stopped = job.stopped(self.role)
        inode = 100_000 + self.pid * 4
        out = [{"fd": 7, "inode": inode, "proto": "tcp6", "local": f":::{port}",
                "remote": ":::0", "tcp_state": "LISTEN", "tx_queue": 0,
                "rx_queue": 1 if stopped else 0}]
        if name == "worker":
            peers = [(p, job.conn_port[(index, p)], job.port[("ps", p)])
                     for p in range(job.num_ps)]
            for fd, (p, local, remote) in enumerate(peers, start=8):
                to_stopped = job.stopped(("ps", p))
                out.append({"fd": fd, "inode": inode + fd, "proto": "tcp6",
                            "local": f"127.0.0.1:{local}", "remote": f"127.0.0.1:{remote}",
                            "tcp_state": "ESTABLISHED", "tx_queue": 2896 if to_stopped else 0,
                            "rx_queue": 0})
        else:
            for fd, w in enumerate(range(job.num_workers), start=8):
                remote = job.conn_port[(w, index)]
                out.append({"fd": fd, "inode": inode + fd, "proto": "tcp6",
                            "local": f"127.0.0.1:{port}", "remote": f"127.0.0.1:{remote}",
                            "tcp_state": "ESTABLISHED", "tx_queue": 0,
                            "rx_queue": 3145 if stopped else 0})
        return out

    # -- logs ----------------------------------------------------------------------------

    def stderr(self) -> str:
        if hasattr(self, "_stderr"):
            return str(self._stderr)
        job, name = self.job, self.role[0]
        head = self.tpl.stderr["ps"].replace("23920", str(self.pid))
        head = head.replace("127.0.0.1:45249", job.address[self.role])
        head = head.replace("ps:0", job.label(self.role))
        lines = head.splitlines()
        if name == "worker":
            stamp = "2026-11-23 13:{:02d}:{:02d},{:03d} " + f"{self.pid} MainThread INFO "
            start = GLOBAL_STEP - 40 * 100
            for n, step in enumerate(range(start, GLOBAL_STEP - 50, 100)):
                local = step // job.num_workers + self.rng.randrange(3)
                lines.append(stamp.format(20 + n // 60, n % 60, self.rng.randrange(1000))
                             + f"step {local} global_step {step} loss {0.9 / (1 + n):.4f}")
            if self.chief:
                lines.append(stamp.format(59, 58, 1) + f"Saving checkpoints for {GLOBAL_STEP} "
                             f"into {CKPT_DIR}/model.ckpt.")
        self._stderr = "\n".join(lines) + "\n"
        return self._stderr


def _dump_json(path: Path, obj: Any, indent: int = 1) -> None:
    path.write_text(json.dumps(obj, indent=indent))


def make_dump(path: Path | str, processes: int = 1000, rounds: int = 5, seed: int = 0,
              compress: bool | None = None, schema: int = layout.SCHEMA_VERSION
              ) -> dict[str, Any]:
    """Write the dump to `path` (created; must not hold a dump) and return its truth.
    `compress`: gzip the files as a capture of that many processes does (None: as capture
    decides, above COMPRESS_FROM processes). `schema`: 5 (the capture's layout: columns,
    the host's listening addresses once a round, one shared sources.json) or 3 (one object
    per thread and socket, everything repeated per process)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tpl = Templates()
    job = Job(processes, rounds, seed, tpl)
    targets, outcomes = [], []
    pauses: dict[str, list[dict[str, Any]]] = {}
    sources_cache: dict[str, str] = {}
    shared_sources: dict[str, dict[str, str]] = {}
    own_cache: dict[str, str] = {}
    listed: set[int] = set()  # rounds whose host_listening a procfs.json holds (schema 5)
    for role in job.roles:
        proc = ProcessWriter(job, role)
        pid = proc.pid
        (root / layout.std_stream_file(pid, "stderr")).parent.mkdir(parents=True, exist_ok=True)
        _dump_json(root / layout.process_file(pid), proc.process_json())
        # Processes of one kind run the same code: same source windows, written once each.
        key = f"{proc.kind}-{proc.chief}"
        if key not in sources_cache:
            sources_cache[key] = json.dumps(proc.sources_json(), indent=1)
            # As the capture keeps them (schema 5): the first process's lines shared, a
            # line another process has otherwise (the ps template's train.py is not the
            # workers') in that process's own file.
            own: dict[str, dict[str, str]] = {}
            for filename, lines in proc.sources_json().items():
                shared = shared_sources.setdefault(filename, {})
                for number, text in lines.items():
                    if shared.setdefault(number, text) != text:
                        own.setdefault(filename, {})[number] = text
            own_cache[key] = json.dumps(own, indent=1) if own else ""
        sources_file = layout.SHARED_SOURCES if schema >= 5 else layout.sources_file(pid)
        if schema < 5:
            (root / layout.sources_file(pid)).write_text(sources_cache[key])
        elif own_cache[key]:
            (root / layout.sources_file(pid)).write_text(own_cache[key])
        for index, procfs, spy in proc.rounds():
            (root / layout.round_dir(pid, index)).mkdir(exist_ok=True)
            if schema >= 5:
                procfs = dict(procfs, netns="4026531840")
                if index in listed:
                    procfs.pop("host_listening", None)
                listed.add(index)
                for name in ("threads", "files", "sockets"):
                    procfs[name] = columns(procfs[name])
            _dump_json(root / layout.procfs_file(pid, index), procfs)
            _dump_json(root / layout.pyspy_file(pid, index), spy, indent=2)
            for collector, name in (("procfs", layout.procfs_file), ("pyspy", layout.pyspy_file)):
                files = [name(pid, index)]
                if collector == "pyspy":
                    files.append(sources_file)
                outcomes.append(_outcome(str(pid), collector, index, files,
                                         round(0.04 + proc.rng.random() * 0.05, 6)))
        (root / layout.std_stream_file(pid, "stderr")).write_text(proc.stderr())
        (root / layout.std_stream_file(pid, "stdout")).write_text("")
        label = job.label(role).replace(":", "-")
        outcomes.extend(_outcome(str(pid), f"log:{stream}", None,
                                 [layout.std_stream_file(pid, stream)])
                        for stream in ("stdout", "stderr"))
        pauses[str(pid)] = [
            {"round": r, "seconds": 0.0, "nonblocking_reason": "the process is stopped (state T)"}
            if job.stopped(role)
            else {"round": r, "seconds": round(0.03 + proc.rng.random() * 0.1, 6),
                  "nonblocking_reason": ""}
            for r in range(rounds)]
        targets.append({"pid": pid, "dir": layout.process_dir(pid),
                        "process_file": layout.process_file(pid),
                        "std_streams": {"stdout": f"{JOB}/logs/{label}.stdout.log",
                                        "stderr": f"{JOB}/logs/{label}.stderr.log"}})
    if schema >= 5:
        (root / layout.SHARED_SOURCES).write_text(json.dumps(shared_sources, indent=1))
    _write_checkpoint(root, job, outcomes)
    manifest = {
        "format": layout.FORMAT_NAME,
        "schema_version": schema,
        "tool_version": "0.1.0",
        "host": "vm",
        "started_at": STARTED_AT - 0.01,
        "ended_at": STARTED_AT + rounds * INTERVAL,
        "complete": True,
        "command": ["postmortem", "capture",
                    *(a for t in targets for a in ("--pid", str(t["pid"]))),
                    "--samples", str(rounds), "--interval", str(INTERVAL),
                    "--checkpoint-dir", CKPT_DIR, "-o", str(root)],
        "options": {"samples": rounds, "interval": INTERVAL, "native": False,
                    "all_threads": False, "nonblocking": False, "tf_trace_ms": 500},
        "targets": targets,
        "rounds": [{"index": i, "started_at": STARTED_AT + i * INTERVAL,
                    "ended_at": STARTED_AT + i * INTERVAL + 2.5} for i in range(rounds)],
        "outcomes": outcomes,
        "tf_servers": [],
        "checkpoint_dirs": [{"index": 0, "dir": CKPT_DIR}],
        "logs": [],
        "interrupted": False,
        "pauses": pauses,
    }
    _dump_json(root / layout.MANIFEST, manifest)
    culprit = ("ps", job.culprit)
    truth = {
        "hang_class": "peer-unresponsive",
        "culprit_role": job.label(culprit),
        "culprit_pid": job.pid[culprit],
        "blocking_op": f"Saver.save on worker:0 waiting on RecvTensor from "
                       f"/job:ps/task:{job.culprit}",
        "notes": "synthetic (benchmarks/synthetic.py): ps SIGSTOPped, the chief in "
                 "Saver.save, every other worker in session.run of the train op",
        "scenario": "synthetic",
        "params": {"processes": processes, "rounds": rounds, "seed": seed,
                   "num_ps": job.num_ps, "num_workers": job.num_workers},
    }
    _dump_json(root / "truth.json", truth)
    if compress if compress is not None else processes > COMPRESS_FROM:
        gzip_dump(root)
    return truth


def _write_checkpoint(root: Path, job: Job, outcomes: list[dict[str, Any]]) -> None:
    (root / layout.checkpoint_dir(0)).mkdir(parents=True, exist_ok=True)
    last = GLOBAL_STEP - 2400
    files = [
        {"name": "checkpoint", "size": 271, "mtime": STARTED_AT - 700},
        {"name": "events.out.tfevents.1795400000.vm", "size": 5_518_100,
         "mtime": STARTED_AT - 31},
        {"name": "graph.pbtxt", "size": 2_073_552, "mtime": STARTED_AT - 40_000},
        {"name": f"model.ckpt-{last}.index", "size": 48_211, "mtime": STARTED_AT - 700},
        {"name": f"model.ckpt-{last}.meta", "size": 3_120_934, "mtime": STARTED_AT - 700},
        {"name": f"model.ckpt-{last}.data-00000-of-00001", "size": 1_843_318_208,
         "mtime": STARTED_AT - 700},
        {"name": f"model.ckpt-{GLOBAL_STEP}_temp", "size": 4096, "mtime": STARTED_AT - 30},
    ]
    state = (f'model_checkpoint_path: "{CKPT_DIR}/model.ckpt-{last}"\n'
             f'all_model_checkpoint_paths: "{CKPT_DIR}/model.ckpt-{last}"\n')
    for index in range(job.rounds):
        _dump_json(root / layout.checkpoint_file(0, index),
                   {"dir": CKPT_DIR, "time": STARTED_AT + index * INTERVAL + 0.1,
                    "exists": True, "files": files, "state_file": state})
        outcomes.append(_outcome(CKPT_DIR, "checkpoint", index,
                                 [layout.checkpoint_file(0, index)], 0.0005))


def _outcome(target: str, collector: str, round_index: int | None, files: list[str],
             seconds: float = 0.0) -> dict[str, Any]:
    return {"target": target, "collector": collector, "status": layout.CollectorStatus.OK.value,
            "round": round_index, "reason": "", "seconds": seconds, "files": files,
            "kind": layout.FailureKind.NONE.value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compress", action=argparse.BooleanOptionalAction, default=None,
                        help="gzip the files (default: as capture, above 16 processes)")
    parser.add_argument("--schema", type=int, choices=(3, 5), default=layout.SCHEMA_VERSION,
                        help="the dump layout: 5 (the capture's, default) or 3 (before: one "
                        "object per thread, everything repeated per process)")
    args = parser.parse_args()
    truth = make_dump(args.out, args.processes, args.rounds, args.seed, args.compress,
                      args.schema)
    print(json.dumps(truth, indent=1))


if __name__ == "__main__":
    main()
