from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_BFLOAT16: _ClassVar[DType]

class SpanRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPAN_ROLE_UNSPECIFIED: _ClassVar[SpanRole]
    SPAN_ROLE_SYSTEM: _ClassVar[SpanRole]
    SPAN_ROLE_USER: _ClassVar[SpanRole]
    SPAN_ROLE_CONTEXT: _ClassVar[SpanRole]
    SPAN_ROLE_RESPONSE: _ClassVar[SpanRole]
    SPAN_ROLE_TEMPLATE: _ClassVar[SpanRole]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_BFLOAT16: DType
SPAN_ROLE_UNSPECIFIED: SpanRole
SPAN_ROLE_SYSTEM: SpanRole
SPAN_ROLE_USER: SpanRole
SPAN_ROLE_CONTEXT: SpanRole
SPAN_ROLE_RESPONSE: SpanRole
SPAN_ROLE_TEMPLATE: SpanRole

class Span(_message.Message):
    __slots__ = ("role", "start", "end")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    role: SpanRole
    start: int
    end: int
    def __init__(self, role: _Optional[_Union[SpanRole, str]] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RequestStart(_message.Message):
    __slots__ = ("request_id", "model_id", "spans")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_id: str
    spans: _containers.RepeatedCompositeFieldContainer[Span]
    def __init__(self, request_id: _Optional[str] = ..., model_id: _Optional[str] = ..., spans: _Optional[_Iterable[_Union[Span, _Mapping]]] = ...) -> None: ...

class ActivationChunk(_message.Message):
    __slots__ = ("request_id", "hook_name", "start_position", "activations", "token_ids", "dropped_since_last", "token_text")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOOK_NAME_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SINCE_LAST_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TEXT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    hook_name: str
    start_position: int
    activations: Tensor
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    dropped_since_last: int
    token_text: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., hook_name: _Optional[str] = ..., start_position: _Optional[int] = ..., activations: _Optional[_Union[Tensor, _Mapping]] = ..., token_ids: _Optional[_Iterable[int]] = ..., dropped_since_last: _Optional[int] = ..., token_text: _Optional[_Iterable[str]] = ...) -> None: ...

class AttentionChunk(_message.Message):
    __slots__ = ("request_id", "start_position", "heads", "lookback", "dropped_since_last")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SINCE_LAST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    start_position: int
    heads: _containers.RepeatedScalarFieldContainer[str]
    lookback: Tensor
    dropped_since_last: int
    def __init__(self, request_id: _Optional[str] = ..., start_position: _Optional[int] = ..., heads: _Optional[_Iterable[str]] = ..., lookback: _Optional[_Union[Tensor, _Mapping]] = ..., dropped_since_last: _Optional[int] = ...) -> None: ...

class RequestEnd(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("start", "chunk", "end", "attention")
    START_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    start: RequestStart
    chunk: ActivationChunk
    end: RequestEnd
    attention: AttentionChunk
    def __init__(self, start: _Optional[_Union[RequestStart, _Mapping]] = ..., chunk: _Optional[_Union[ActivationChunk, _Mapping]] = ..., end: _Optional[_Union[RequestEnd, _Mapping]] = ..., attention: _Optional[_Union[AttentionChunk, _Mapping]] = ...) -> None: ...

class LatentEvidence(_message.Message):
    __slots__ = ("sae_id", "index", "activation", "contribution", "label", "missing")
    SAE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    sae_id: str
    index: int
    activation: float
    contribution: float
    label: str
    missing: bool
    def __init__(self, sae_id: _Optional[str] = ..., index: _Optional[int] = ..., activation: _Optional[float] = ..., contribution: _Optional[float] = ..., label: _Optional[str] = ..., missing: _Optional[bool] = ...) -> None: ...

class TokenAttribution(_message.Message):
    __slots__ = ("position", "contribution", "text", "expected")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    position: int
    contribution: float
    text: str
    expected: bool
    def __init__(self, position: _Optional[int] = ..., contribution: _Optional[float] = ..., text: _Optional[str] = ..., expected: _Optional[bool] = ...) -> None: ...

class SteerEdit(_message.Message):
    __slots__ = ("hook_name", "direction", "strength")
    HOOK_NAME_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    hook_name: str
    direction: Tensor
    strength: float
    def __init__(self, hook_name: _Optional[str] = ..., direction: _Optional[_Union[Tensor, _Mapping]] = ..., strength: _Optional[float] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("request_id", "detector", "score", "threshold", "flagged", "token_start", "token_end", "final", "low_confidence", "evidence", "explanation", "attribution", "action", "steer")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_START_FIELD_NUMBER: _ClassVar[int]
    TOKEN_END_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STEER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    detector: str
    score: float
    threshold: float
    flagged: bool
    token_start: int
    token_end: int
    final: bool
    low_confidence: bool
    evidence: _containers.RepeatedCompositeFieldContainer[LatentEvidence]
    explanation: str
    attribution: _containers.RepeatedCompositeFieldContainer[TokenAttribution]
    action: str
    steer: SteerEdit
    def __init__(self, request_id: _Optional[str] = ..., detector: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., flagged: _Optional[bool] = ..., token_start: _Optional[int] = ..., token_end: _Optional[int] = ..., final: _Optional[bool] = ..., low_confidence: _Optional[bool] = ..., evidence: _Optional[_Iterable[_Union[LatentEvidence, _Mapping]]] = ..., explanation: _Optional[str] = ..., attribution: _Optional[_Iterable[_Union[TokenAttribution, _Mapping]]] = ..., action: _Optional[str] = ..., steer: _Optional[_Union[SteerEdit, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("request_id", "code", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    code: int
    message: str
    def __init__(self, request_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class RequestDone(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("verdict", "error", "done")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    error: StreamError
    done: RequestDone
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ..., done: _Optional[_Union[RequestDone, _Mapping]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("start", "chunks", "attention")
    START_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    start: RequestStart
    chunks: _containers.RepeatedCompositeFieldContainer[ActivationChunk]
    attention: _containers.RepeatedCompositeFieldContainer[AttentionChunk]
    def __init__(self, start: _Optional[_Union[RequestStart, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[ActivationChunk, _Mapping]]] = ..., attention: _Optional[_Iterable[_Union[AttentionChunk, _Mapping]]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("verdicts",)
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ...) -> None: ...

class ListDetectorsRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class DetectorInfo(_message.Message):
    __slots__ = ("name", "kind", "hook_names", "threshold", "target_fpr", "description", "heads", "requires", "model_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HOOK_NAMES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FPR_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    hook_names: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    target_fpr: float
    description: str
    heads: _containers.RepeatedScalarFieldContainer[str]
    requires: _containers.RepeatedScalarFieldContainer[str]
    model_id: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., hook_names: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ..., target_fpr: _Optional[float] = ..., description: _Optional[str] = ..., heads: _Optional[_Iterable[str]] = ..., requires: _Optional[_Iterable[str]] = ..., model_id: _Optional[str] = ...) -> None: ...

class ListDetectorsResponse(_message.Message):
    __slots__ = ("detectors",)
    DETECTORS_FIELD_NUMBER: _ClassVar[int]
    detectors: _containers.RepeatedCompositeFieldContainer[DetectorInfo]
    def __init__(self, detectors: _Optional[_Iterable[_Union[DetectorInfo, _Mapping]]] = ...) -> None: ...

class WatchAlertsRequest(_message.Message):
    __slots__ = ("detectors",)
    DETECTORS_FIELD_NUMBER: _ClassVar[int]
    detectors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, detectors: _Optional[_Iterable[str]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("alert_id", "request_id", "model_id", "detector", "score", "threshold", "token_start", "token_end", "evidence", "timestamp", "low_confidence", "explanation", "text", "attribution", "action")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_START_FIELD_NUMBER: _ClassVar[int]
    TOKEN_END_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    request_id: str
    model_id: str
    detector: str
    score: float
    threshold: float
    token_start: int
    token_end: int
    evidence: _containers.RepeatedCompositeFieldContainer[LatentEvidence]
    timestamp: float
    low_confidence: bool
    explanation: str
    text: str
    attribution: _containers.RepeatedCompositeFieldContainer[TokenAttribution]
    action: str
    def __init__(self, alert_id: _Optional[str] = ..., request_id: _Optional[str] = ..., model_id: _Optional[str] = ..., detector: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., token_start: _Optional[int] = ..., token_end: _Optional[int] = ..., evidence: _Optional[_Iterable[_Union[LatentEvidence, _Mapping]]] = ..., timestamp: _Optional[float] = ..., low_confidence: _Optional[bool] = ..., explanation: _Optional[str] = ..., text: _Optional[str] = ..., attribution: _Optional[_Iterable[_Union[TokenAttribution, _Mapping]]] = ..., action: _Optional[str] = ...) -> None: ...
