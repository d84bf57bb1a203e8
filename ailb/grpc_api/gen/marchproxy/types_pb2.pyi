import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModuleType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODULE_TYPE_UNSPECIFIED: _ClassVar[ModuleType]
    MODULE_TYPE_ALB: _ClassVar[ModuleType]
    MODULE_TYPE_DBLB: _ClassVar[ModuleType]
    MODULE_TYPE_AILB: _ClassVar[ModuleType]
    MODULE_TYPE_RTMP: _ClassVar[ModuleType]
    MODULE_TYPE_NLB: _ClassVar[ModuleType]

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_HEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_DEGRADED: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNHEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_STARTING: _ClassVar[HealthStatus]
    HEALTH_STATUS_STOPPING: _ClassVar[HealthStatus]
    HEALTH_STATUS_STOPPED: _ClassVar[HealthStatus]

class StatusCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_CODE_UNSPECIFIED: _ClassVar[StatusCode]
    STATUS_CODE_OK: _ClassVar[StatusCode]
    STATUS_CODE_ERROR: _ClassVar[StatusCode]
    STATUS_CODE_NOT_FOUND: _ClassVar[StatusCode]
    STATUS_CODE_UNAVAILABLE: _ClassVar[StatusCode]
    STATUS_CODE_INVALID_ARGUMENT: _ClassVar[StatusCode]
    STATUS_CODE_PERMISSION_DENIED: _ClassVar[StatusCode]
    STATUS_CODE_ALREADY_EXISTS: _ClassVar[StatusCode]
    STATUS_CODE_RESOURCE_EXHAUSTED: _ClassVar[StatusCode]

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNSPECIFIED: _ClassVar[Protocol]
    PROTOCOL_TCP: _ClassVar[Protocol]
    PROTOCOL_UDP: _ClassVar[Protocol]
    PROTOCOL_HTTP: _ClassVar[Protocol]
    PROTOCOL_HTTPS: _ClassVar[Protocol]
    PROTOCOL_HTTP2: _ClassVar[Protocol]
    PROTOCOL_HTTP3: _ClassVar[Protocol]
    PROTOCOL_GRPC: _ClassVar[Protocol]
    PROTOCOL_WEBSOCKET: _ClassVar[Protocol]
    PROTOCOL_MYSQL: _ClassVar[Protocol]
    PROTOCOL_POSTGRES: _ClassVar[Protocol]
    PROTOCOL_MONGODB: _ClassVar[Protocol]
    PROTOCOL_REDIS: _ClassVar[Protocol]
    PROTOCOL_RTMP: _ClassVar[Protocol]
    PROTOCOL_RTMPS: _ClassVar[Protocol]
    PROTOCOL_HLS: _ClassVar[Protocol]
    PROTOCOL_DASH: _ClassVar[Protocol]
    PROTOCOL_SRT: _ClassVar[Protocol]
    PROTOCOL_WEBRTC: _ClassVar[Protocol]
    PROTOCOL_WHIP: _ClassVar[Protocol]
    PROTOCOL_WHEP: _ClassVar[Protocol]
MODULE_TYPE_UNSPECIFIED: ModuleType
MODULE_TYPE_ALB: ModuleType
MODULE_TYPE_DBLB: ModuleType
MODULE_TYPE_AILB: ModuleType
MODULE_TYPE_RTMP: ModuleType
MODULE_TYPE_NLB: ModuleType
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_HEALTHY: HealthStatus
HEALTH_STATUS_DEGRADED: HealthStatus
HEALTH_STATUS_UNHEALTHY: HealthStatus
HEALTH_STATUS_STARTING: HealthStatus
HEALTH_STATUS_STOPPING: HealthStatus
HEALTH_STATUS_STOPPED: HealthStatus
STATUS_CODE_UNSPECIFIED: StatusCode
STATUS_CODE_OK: StatusCode
STATUS_CODE_ERROR: StatusCode
STATUS_CODE_NOT_FOUND: StatusCode
STATUS_CODE_UNAVAILABLE: StatusCode
STATUS_CODE_INVALID_ARGUMENT: StatusCode
STATUS_CODE_PERMISSION_DENIED: StatusCode
STATUS_CODE_ALREADY_EXISTS: StatusCode
STATUS_CODE_RESOURCE_EXHAUSTED: StatusCode
PROTOCOL_UNSPECIFIED: Protocol
PROTOCOL_TCP: Protocol
PROTOCOL_UDP: Protocol
PROTOCOL_HTTP: Protocol
PROTOCOL_HTTPS: Protocol
PROTOCOL_HTTP2: Protocol
PROTOCOL_HTTP3: Protocol
PROTOCOL_GRPC: Protocol
PROTOCOL_WEBSOCKET: Protocol
PROTOCOL_MYSQL: Protocol
PROTOCOL_POSTGRES: Protocol
PROTOCOL_MONGODB: Protocol
PROTOCOL_REDIS: Protocol
PROTOCOL_RTMP: Protocol
PROTOCOL_RTMPS: Protocol
PROTOCOL_HLS: Protocol
PROTOCOL_DASH: Protocol
PROTOCOL_SRT: Protocol
PROTOCOL_WEBRTC: Protocol
PROTOCOL_WHIP: Protocol
PROTOCOL_WHEP: Protocol

class ModuleInstance(_message.Message):
    __slots__ = ("instance_id", "module_type", "address", "health_status", "metadata", "started_at", "current_connections", "max_connections", "version", "traffic_weight")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    module_type: ModuleType
    address: str
    health_status: HealthStatus
    metadata: _containers.ScalarMap[str, str]
    started_at: _timestamp_pb2.Timestamp
    current_connections: int
    max_connections: int
    version: str
    traffic_weight: int
    def __init__(self, instance_id: _Optional[str] = ..., module_type: _Optional[_Union[ModuleType, str]] = ..., address: _Optional[str] = ..., health_status: _Optional[_Union[HealthStatus, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_connections: _Optional[int] = ..., max_connections: _Optional[int] = ..., version: _Optional[str] = ..., traffic_weight: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("route_id", "protocol", "source_pattern", "destination_pattern", "source_port", "destination_port", "headers", "path_pattern", "priority", "metadata")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATTERN_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PATTERN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PORT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORT_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PATH_PATTERN_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    route_id: str
    protocol: Protocol
    source_pattern: str
    destination_pattern: str
    source_port: int
    destination_port: int
    headers: _containers.ScalarMap[str, str]
    path_pattern: str
    priority: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, route_id: _Optional[str] = ..., protocol: _Optional[_Union[Protocol, str]] = ..., source_pattern: _Optional[str] = ..., destination_pattern: _Optional[str] = ..., source_port: _Optional[int] = ..., destination_port: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ..., path_pattern: _Optional[str] = ..., priority: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("limit_id", "target", "requests_per_second", "requests_per_minute", "requests_per_hour", "burst_size", "enabled", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LIMIT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    BURST_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    limit_id: str
    target: str
    requests_per_second: int
    requests_per_minute: int
    requests_per_hour: int
    burst_size: int
    enabled: bool
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, limit_id: _Optional[str] = ..., target: _Optional[str] = ..., requests_per_second: _Optional[int] = ..., requests_per_minute: _Optional[int] = ..., requests_per_hour: _Optional[int] = ..., burst_size: _Optional[int] = ..., enabled: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MetricDataPoint(_message.Message):
    __slots__ = ("name", "value", "labels", "timestamp")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    labels: _containers.ScalarMap[str, str]
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModuleMetrics(_message.Message):
    __slots__ = ("instance_id", "module_type", "metrics", "collected_at")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_TYPE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    COLLECTED_AT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    module_type: ModuleType
    metrics: _containers.RepeatedCompositeFieldContainer[MetricDataPoint]
    collected_at: _timestamp_pb2.Timestamp
    def __init__(self, instance_id: _Optional[str] = ..., module_type: _Optional[_Union[ModuleType, str]] = ..., metrics: _Optional[_Iterable[_Union[MetricDataPoint, _Mapping]]] = ..., collected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModuleStats(_message.Message):
    __slots__ = ("instance_id", "total_requests", "successful_requests", "failed_requests", "active_connections", "total_connections", "avg_latency_ms", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "bytes_received", "bytes_sent", "cpu_usage_percent", "memory_usage_mb", "since", "custom_stats")
    class CustomStatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSFUL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P50_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P99_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_MB_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_STATS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    total_requests: int
    successful_requests: int
    failed_requests: int
    active_connections: int
    total_connections: int
    avg_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    bytes_received: int
    bytes_sent: int
    cpu_usage_percent: float
    memory_usage_mb: float
    since: _timestamp_pb2.Timestamp
    custom_stats: _containers.ScalarMap[str, str]
    def __init__(self, instance_id: _Optional[str] = ..., total_requests: _Optional[int] = ..., successful_requests: _Optional[int] = ..., failed_requests: _Optional[int] = ..., active_connections: _Optional[int] = ..., total_connections: _Optional[int] = ..., avg_latency_ms: _Optional[float] = ..., p50_latency_ms: _Optional[float] = ..., p95_latency_ms: _Optional[float] = ..., p99_latency_ms: _Optional[float] = ..., bytes_received: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., cpu_usage_percent: _Optional[float] = ..., memory_usage_mb: _Optional[float] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., custom_stats: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ConfigUpdate(_message.Message):
    __slots__ = ("config_id", "config_type", "config_data", "checksum", "updated_at", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONFIG_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DATA_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    config_id: str
    config_type: str
    config_data: bytes
    checksum: str
    updated_at: _timestamp_pb2.Timestamp
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, config_id: _Optional[str] = ..., config_type: _Optional[str] = ..., config_data: _Optional[bytes] = ..., checksum: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ScalingConfig(_message.Message):
    __slots__ = ("min_instances", "max_instances", "target_cpu_percent", "target_memory_percent", "target_connections", "scale_up_threshold", "scale_down_threshold", "cooldown_seconds", "auto_scaling_enabled")
    MIN_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    TARGET_CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    SCALE_UP_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SCALE_DOWN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AUTO_SCALING_ENABLED_FIELD_NUMBER: _ClassVar[int]
    min_instances: int
    max_instances: int
    target_cpu_percent: int
    target_memory_percent: int
    target_connections: int
    scale_up_threshold: int
    scale_down_threshold: int
    cooldown_seconds: int
    auto_scaling_enabled: bool
    def __init__(self, min_instances: _Optional[int] = ..., max_instances: _Optional[int] = ..., target_cpu_percent: _Optional[int] = ..., target_memory_percent: _Optional[int] = ..., target_connections: _Optional[int] = ..., scale_up_threshold: _Optional[int] = ..., scale_down_threshold: _Optional[int] = ..., cooldown_seconds: _Optional[int] = ..., auto_scaling_enabled: _Optional[bool] = ...) -> None: ...

class BlueGreenConfig(_message.Message):
    __slots__ = ("blue_version", "green_version", "blue_weight", "green_weight", "active_version", "canary_enabled", "canary_percent", "deployment_started")
    BLUE_VERSION_FIELD_NUMBER: _ClassVar[int]
    GREEN_VERSION_FIELD_NUMBER: _ClassVar[int]
    BLUE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    GREEN_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_ENABLED_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_STARTED_FIELD_NUMBER: _ClassVar[int]
    blue_version: str
    green_version: str
    blue_weight: int
    green_weight: int
    active_version: str
    canary_enabled: bool
    canary_percent: int
    deployment_started: _timestamp_pb2.Timestamp
    def __init__(self, blue_version: _Optional[str] = ..., green_version: _Optional[str] = ..., blue_weight: _Optional[int] = ..., green_weight: _Optional[int] = ..., active_version: _Optional[str] = ..., canary_enabled: _Optional[bool] = ..., canary_percent: _Optional[int] = ..., deployment_started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "details", "occurred_at")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    code: StatusCode
    message: str
    details: _containers.ScalarMap[str, str]
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, code: _Optional[_Union[StatusCode, str]] = ..., message: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Pagination(_message.Message):
    __slots__ = ("page", "page_size", "total_items", "total_pages")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PAGES_FIELD_NUMBER: _ClassVar[int]
    page: int
    page_size: int
    total_items: int
    total_pages: int
    def __init__(self, page: _Optional[int] = ..., page_size: _Optional[int] = ..., total_items: _Optional[int] = ..., total_pages: _Optional[int] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("field", "operator", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    operator: str
    value: str
    def __init__(self, field: _Optional[str] = ..., operator: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("filters", "sort_by", "sort_desc", "pagination")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    SORT_BY_FIELD_NUMBER: _ClassVar[int]
    SORT_DESC_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    sort_by: str
    sort_desc: bool
    pagination: Pagination
    def __init__(self, filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., sort_by: _Optional[str] = ..., sort_desc: _Optional[bool] = ..., pagination: _Optional[_Union[Pagination, _Mapping]] = ...) -> None: ...
