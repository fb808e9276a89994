"""Run records and sessions between the domain and the smolmesh.v1 wire types."""

from __future__ import annotations

from mesh._proto import agent_pb2 as pb
from mesh.host.run_record import RunFilter, RunRecord, RunStatus
from mesh.host.sessions import SessionInfo, SessionTurn
from mesh.rpc.convert import (
    agent_usage_from_proto,
    agent_usage_to_proto,
    answer_text,
    error_from_proto,
    error_to_proto,
    from_json,
    seconds_from_proto,
    timestamp_to_proto,
    to_json,
    usage_from_proto,
    usage_to_proto,
)

__all__ = [
    "run_filter_from_proto",
    "run_record_from_proto",
    "run_record_to_proto",
    "run_status_from_proto",
    "run_status_to_proto",
    "session_from_proto",
    "session_to_proto",
    "turn_from_proto",
    "turn_to_proto",
]

_STATUS = {
    RunStatus.QUEUED: pb.RUN_STATE_QUEUED,
    RunStatus.RUNNING: pb.RUN_STATE_RUNNING,
    RunStatus.SUCCEEDED: pb.RUN_STATE_SUCCEEDED,
    RunStatus.MAX_STEPS: pb.RUN_STATE_MAX_STEPS,
    RunStatus.FAILED: pb.RUN_STATE_FAILED,
    RunStatus.CANCELLED: pb.RUN_STATE_CANCELLED,
}
_STATUS_BACK = {wire: status for status, wire in _STATUS.items()}


def run_status_to_proto(status: RunStatus) -> pb.RunState:
    return _STATUS[status]


def run_status_from_proto(state: pb.RunState) -> RunStatus:
    if state not in _STATUS_BACK:
        raise ValueError(f"not a run state: {state}")
    return _STATUS_BACK[state]


def run_record_to_proto(record: RunRecord) -> pb.Run:
    run = pb.Run(
        run_id=record.run_id, agent=record.agent, state=_STATUS[record.status], task=record.task,
        session_id=record.session_id, parent_run_id=record.parent_run_id,
        create_time=timestamp_to_proto(record.created), steps=record.steps,
        usage=usage_to_proto(record.usage),
        usage_by_agent={n: agent_usage_to_proto(u) for n, u in record.usage_by_agent.items()},
        event_count=record.event_count, events_truncated=record.events_truncated,
    )  # fmt: skip
    if record.started is not None:
        run.start_time.CopyFrom(timestamp_to_proto(record.started))
    if record.ended is not None:
        run.end_time.CopyFrom(timestamp_to_proto(record.ended))
    if record.status in (RunStatus.SUCCEEDED, RunStatus.MAX_STEPS):
        run.answer_json, run.answer_text = to_json(record.answer), answer_text(record.answer)
    if record.error is not None:
        run.error.CopyFrom(error_to_proto(record.error))
    return run


def run_record_from_proto(run: pb.Run) -> RunRecord:
    return RunRecord(
        run_id=run.run_id, agent=run.agent, task=run.task,
        status=run_status_from_proto(run.state), session_id=run.session_id,
        parent_run_id=run.parent_run_id, created=seconds_from_proto(run.create_time),
        started=seconds_from_proto(run.start_time) if run.HasField("start_time") else None,
        ended=seconds_from_proto(run.end_time) if run.HasField("end_time") else None,
        answer=from_json(run.answer_json) if run.answer_json else None, steps=run.steps,
        usage=usage_from_proto(run.usage),
        usage_by_agent={n: agent_usage_from_proto(u) for n, u in run.usage_by_agent.items()},
        error=error_from_proto(run.error) if run.HasField("error") else None,
        event_count=run.event_count, events_truncated=run.events_truncated,
    )  # fmt: skip


def run_filter_from_proto(request: pb.ListRunsRequest) -> RunFilter:
    return RunFilter(
        statuses=frozenset(run_status_from_proto(s) for s in request.states),
        created_after=(seconds_from_proto(request.created_after)
                       if request.HasField("created_after") else None),
        created_before=(seconds_from_proto(request.created_before)
                        if request.HasField("created_before") else None),
        session_id=request.session_id,
    )  # fmt: skip


def run_filter_to_proto(where: RunFilter, request: pb.ListRunsRequest) -> None:
    """Write ``where`` into ``request``."""
    request.states.extend(sorted(_STATUS[s] for s in where.statuses))
    if where.created_after is not None:
        request.created_after.CopyFrom(timestamp_to_proto(where.created_after))
    if where.created_before is not None:
        request.created_before.CopyFrom(timestamp_to_proto(where.created_before))
    request.session_id = where.session_id


def session_to_proto(session: SessionInfo) -> pb.Session:
    return pb.Session(
        session_id=session.session_id, create_time=timestamp_to_proto(session.created),
        update_time=timestamp_to_proto(session.updated), turn_count=session.turn_count,
        dropped_turns=session.dropped_turns,
    )  # fmt: skip


def session_from_proto(session: pb.Session) -> SessionInfo:
    return SessionInfo(
        session_id=session.session_id, created=seconds_from_proto(session.create_time),
        updated=seconds_from_proto(session.update_time), turn_count=session.turn_count,
        dropped_turns=session.dropped_turns,
    )  # fmt: skip


def turn_to_proto(turn: SessionTurn) -> pb.SessionTurn:
    return pb.SessionTurn(run_id=turn.run_id, task=turn.task, answer_text=turn.answer_text,
                          time=timestamp_to_proto(turn.time), steps=turn.steps)  # fmt: skip


def turn_from_proto(turn: pb.SessionTurn) -> SessionTurn:
    return SessionTurn(run_id=turn.run_id, task=turn.task, answer_text=turn.answer_text,
                       time=seconds_from_proto(turn.time), steps=turn.steps)  # fmt: skip
