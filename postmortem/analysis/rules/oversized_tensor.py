"""A non-sharded save pulls one tensor of 2 GiB or more through gRPC (tensorflow#6117).

Evidence: TensorFlow's own error naming the rendezvous (source device, edge, variable),
a thread in Saver.save, and huge RecvTensor transfers in a trace. Without the error (older
TensorFlow hangs instead of raising): the flight recorder's inventory (a >= 2 GiB variable
on a ps, a saver that is not sharded) with a save that does not end; or, with no recorder,
a stuck save while a ps holding >= 2 GiB is busy.
"""

from __future__ import annotations

from postmortem.analysis import flight as flight_facts
from postmortem.analysis.facts import Facts
from postmortem.analysis.roles import role_from_device
from postmortem.analysis.rules.common import Case, culprit, flight_evidence, thread_evidence
from postmortem.model import Evidence, Finding, FlightRecord, HangClass, RecordedVariable, Status

HANG_CLASS = HangClass.OVERSIZED_TENSOR_TRANSFER
GIB_2 = 2**31

FIX = (
    "Build the Saver with sharded=True (tf.compat.v1.train.Saver(sharded=True)) so each ps "
    "writes its own variables and no tensor crosses the network; and/or partition the large "
    "variable (partitioner=tf.compat.v1.fixed_size_partitioner(N)) so no single tensor "
    "reaches the 2 GiB gRPC/protobuf limit."
)


def evaluate(facts: Facts) -> list[Finding]:
    details = facts.oversized_details()
    if not details:
        return _from_the_inventory(facts) or _without_the_error(facts)
    src_role = details.get("src_role")
    role = src_role if isinstance(src_role, str) else None
    variable = details.get("variable") or "a variable"
    src = details.get("src_device") or details.get("remote_target") or "a ps"
    dst = details.get("dst_device") or "the saving worker"
    exceeded = details.get("exceeded_bytes")
    case = Case(HANG_CLASS, 0.95)
    case.add(
        0,
        Evidence(
            f"TensorFlow error: {details.get('line')}",
            str(details.get("source")),
            str(details.get("reported_by")),
        ),
    )
    savers = [t for t in facts.threads if t.in_save]
    case.add(0, *(thread_evidence(facts, t, "inside a save") for t in savers[:2]))
    for record, var in _inventory_hits(facts)[:2]:
        case.add(0.02, _inventory_evidence(record, var))
    op = f"Saver.save of `{variable}` pulled from {src} to {dst} as one gRPC message"
    if isinstance(exceeded, int):
        op += f" ({exceeded / 1e6:.1f} MB over the 2 GiB protobuf limit)"
    saver_role = (
        role_from_device(str(dst)) if isinstance(dst, str) and dst.startswith("/job") else None
    )
    summary = (
        f"The checkpoint save cannot complete: the non-sharded Saver on "
        f"{saver_role or 'the worker'} pulls `{variable}` from {role or src} in one "
        f"tensor of 2 GiB or more, over the gRPC/protobuf message limit. Older "
        f"TensorFlow hangs here; newer raises and the job retries or dies."
    )
    return [case.finding(summary, FIX, culprit(facts, role, f"holds `{variable}` (>= 2 GiB)"), op)]


def _without_the_error(facts: Facts) -> list[Finding]:
    """Older TensorFlow hangs instead of raising: a save that waits on a busy ps holding
    more than 2 GiB is the same transfer, seen from the outside (tensorflow#6117)."""
    savers = [t for t in facts.threads if t.in_save and t.status is Status.STUCK]
    if not savers:
        return []
    for member in facts.members:
        if member.job != "ps" or member.pid is None or member.unresponsive:
            continue
        size = facts.max_rss(member.pid)
        busy = [t for t in facts.threads_of(member.pid) if t.status is Status.BUSY]
        if size is None or size < GIB_2 or not busy:
            continue
        case = Case(HANG_CLASS, 0.55)
        case.add(
            0,
            Evidence(
                f"{member.role} holds {size / 2**30:.2f} GiB in memory (RSS)",
                facts.sources.procfs(member.pid),
                member.role,
            ),
            *(thread_evidence(facts, t, "sending") for t in busy[:2]),
            *(thread_evidence(facts, t, "inside a save") for t in savers[:2]),
        )
        saver = savers[0].role
        summary = (
            f"The checkpoint save on {saver} waits while {member.role}, "
            f"which holds {size / 2**30:.1f} GiB, is busy sending: a non-sharded save pulls "
            "every variable through gRPC, and one of 2 GiB or more cannot pass in one message."
        )
        op = f"Saver.save on {saver} pulling variables from {member.role}"
        return [
            case.finding(
                summary, FIX, culprit(facts, member.role, "busy sending a >= 2 GiB tensor"), op
            )
        ]
    return []


def _inventory_hits(facts: Facts) -> list[tuple[FlightRecord, RecordedVariable]]:
    return [(r, v) for r in facts.flights for v in flight_facts.oversized(r)]


def _inventory_evidence(record: FlightRecord, var: RecordedVariable) -> Evidence:
    size = (var.bytes or 0) / 2**30
    return Evidence(
        f"flight recorder inventory of {record.role}: `{var.name}` is {size:.2f} GiB "
        f"({var.dtype} {var.shape}) on {var.role}, and its saver is not sharded "
        f"(save op on {', '.join(record.saver_devices) or 'the worker'})",
        record.source,
        record.role,
    )


def _from_the_inventory(facts: Facts) -> list[Finding]:
    """The job told us its variables: one of >= 2 GiB on a ps under a non-sharded saver,
    and a save that began and does not end (or a thread stuck in it), is this hang even
    when TensorFlow printed nothing."""
    hits = _inventory_hits(facts)
    if not hits:
        return []
    record, var = hits[0]
    open_save = record.open_save
    stuck = [t for t in facts.threads if t.in_save and t.status is Status.STUCK]
    if open_save is None and not stuck:
        return []  # a risk (the incident lists it), not this hang
    case = Case(HANG_CLASS, 0.6)
    case.add(0, _inventory_evidence(record, var))
    if open_save is not None:
        case.add(0.1, *flight_evidence(facts, {record.pid}))
    if stuck:
        case.add(0.1, *(thread_evidence(facts, t, "inside a save") for t in stuck[:2]))
    big = [t for t in record.transfers if t.largest_bytes >= 2**27]
    if big:
        t = big[0]
        case.add(
            0.05,
            Evidence(
                f"its traced steps pulled up to {t.largest_bytes / 2**20:.0f} MiB in one "
                f"RecvTensor from {t.source_device}",
                record.source,
                record.role,
            ),
        )
    ps = var.role or "a ps"
    saver = role_from_device(record.saver_devices[0]) if record.saver_devices else None
    saver = saver or record.role
    summary = (
        f"The checkpoint save on {saver} cannot complete: its saver is not sharded, so it "
        f"pulls `{var.name}` ({(var.bytes or 0) / 2**30:.1f} GiB) from {ps} in one gRPC "
        "message, over the 2 GiB protobuf limit. TensorFlow printed no error: older "
        "releases hang here."
    )
    op = f"Saver.save of `{var.name}` pulled from {ps} to {saver} as one gRPC message"
    return [case.finding(summary, FIX, culprit(facts, ps, f"holds `{var.name}` (>= 2 GiB)"), op)]
