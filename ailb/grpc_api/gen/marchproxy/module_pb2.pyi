import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ailb.grpc_api.gen.marchproxy import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("instance", "status", "message", "last_updated", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.ModuleInstance
    status: _types_pb2.HealthStatus
    message: str
    last_updated: _timestamp_pb2.Timestamp
    details: _containers.ScalarMap[str, str]
    def __init__(self, instance: _Optional[_Union[_types_pb2.ModuleInstance, _Mapping]] = ..., status: _Optional[_Union[_types_pb2.HealthStatus, str]] = ..., message: _Optional[str] = ..., last_updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("instance_id", "graceful", "timeout_seconds")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    graceful: bool
    timeout_seconds: int
    def __init__(self, instance_id: _Optional[str] = ..., graceful: _Optional[bool] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("success", "message", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("instance_id", "graceful", "timeout_seconds")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    graceful: bool
    timeout_seconds: int
    def __init__(self, instance_id: _Optional[str] = ..., graceful: _Optional[bool] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ("success", "message", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class CanHandleRequest(_message.Message):
    __slots__ = ("route", "context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    route: _types_pb2.Route
    context: _containers.ScalarMap[str, str]
    def __init__(self, route: _Optional[_Union[_types_pb2.Route, _Mapping]] = ..., context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CanHandleResponse(_message.Message):
    __slots__ = ("can_handle", "priority", "reason", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CAN_HANDLE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    can_handle: bool
    priority: int
    reason: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, can_handle: _Optional[bool] = ..., priority: _Optional[int] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetRoutesRequest(_message.Message):
    __slots__ = ("instance_id", "query")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    query: _types_pb2.Query
    def __init__(self, instance_id: _Optional[str] = ..., query: _Optional[_Union[_types_pb2.Query, _Mapping]] = ...) -> None: ...

class GetRoutesResponse(_message.Message):
    __slots__ = ("routes", "total_routes", "pagination")
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUTES_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[_types_pb2.Route]
    total_routes: int
    pagination: _types_pb2.Pagination
    def __init__(self, routes: _Optional[_Iterable[_Union[_types_pb2.Route, _Mapping]]] = ..., total_routes: _Optional[int] = ..., pagination: _Optional[_Union[_types_pb2.Pagination, _Mapping]] = ...) -> None: ...

class UpdateRoutesRequest(_message.Message):
    __slots__ = ("instance_id", "routes", "replace_all")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    REPLACE_ALL_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    routes: _containers.RepeatedCompositeFieldContainer[_types_pb2.Route]
    replace_all: bool
    def __init__(self, instance_id: _Optional[str] = ..., routes: _Optional[_Iterable[_Union[_types_pb2.Route, _Mapping]]] = ..., replace_all: _Optional[bool] = ...) -> None: ...

class UpdateRoutesResponse(_message.Message):
    __slots__ = ("success", "message", "routes_updated", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ROUTES_UPDATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    routes_updated: int
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., routes_updated: _Optional[int] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class DeleteRouteRequest(_message.Message):
    __slots__ = ("instance_id", "route_id")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    route_id: str
    def __init__(self, instance_id: _Optional[str] = ..., route_id: _Optional[str] = ...) -> None: ...

class DeleteRouteResponse(_message.Message):
    __slots__ = ("success", "message", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class GetRateLimitsRequest(_message.Message):
    __slots__ = ("instance_id", "target")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    target: str
    def __init__(self, instance_id: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class GetRateLimitsResponse(_message.Message):
    __slots__ = ("limits", "total_limits")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.RepeatedCompositeFieldContainer[_types_pb2.RateLimit]
    total_limits: int
    def __init__(self, limits: _Optional[_Iterable[_Union[_types_pb2.RateLimit, _Mapping]]] = ..., total_limits: _Optional[int] = ...) -> None: ...

class SetRateLimitRequest(_message.Message):
    __slots__ = ("instance_id", "limit")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    limit: _types_pb2.RateLimit
    def __init__(self, instance_id: _Optional[str] = ..., limit: _Optional[_Union[_types_pb2.RateLimit, _Mapping]] = ...) -> None: ...

class SetRateLimitResponse(_message.Message):
    __slots__ = ("success", "message", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class RemoveRateLimitRequest(_message.Message):
    __slots__ = ("instance_id", "limit_id")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    limit_id: str
    def __init__(self, instance_id: _Optional[str] = ..., limit_id: _Optional[str] = ...) -> None: ...

class RemoveRateLimitResponse(_message.Message):
    __slots__ = ("success", "message", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ("instance_id", "metric_names", "start_time", "end_time")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    metric_names: _containers.RepeatedScalarFieldContainer[str]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, instance_id: _Optional[str] = ..., metric_names: _Optional[_Iterable[str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetMetricsResponse(_message.Message):
    __slots__ = ("metrics", "collected_at")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    COLLECTED_AT_FIELD_NUMBER: _ClassVar[int]
    metrics: _types_pb2.ModuleMetrics
    collected_at: _timestamp_pb2.Timestamp
    def __init__(self, metrics: _Optional[_Union[_types_pb2.ModuleMetrics, _Mapping]] = ..., collected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ScaleRequest(_message.Message):
    __slots__ = ("instance_id", "config", "immediate")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    IMMEDIATE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    config: _types_pb2.ScalingConfig
    immediate: bool
    def __init__(self, instance_id: _Optional[str] = ..., config: _Optional[_Union[_types_pb2.ScalingConfig, _Mapping]] = ..., immediate: _Optional[bool] = ...) -> None: ...

class ScaleResponse(_message.Message):
    __slots__ = ("success", "message", "current_instances", "desired_instances", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    DESIRED_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    current_instances: int
    desired_instances: int
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., current_instances: _Optional[int] = ..., desired_instances: _Optional[int] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class GetInstancesRequest(_message.Message):
    __slots__ = ("module_type", "status_filter")
    MODULE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FILTER_FIELD_NUMBER: _ClassVar[int]
    module_type: _types_pb2.ModuleType
    status_filter: _types_pb2.HealthStatus
    def __init__(self, module_type: _Optional[_Union[_types_pb2.ModuleType, str]] = ..., status_filter: _Optional[_Union[_types_pb2.HealthStatus, str]] = ...) -> None: ...

class GetInstancesResponse(_message.Message):
    __slots__ = ("instances", "total_instances")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.ModuleInstance]
    total_instances: int
    def __init__(self, instances: _Optional[_Iterable[_Union[_types_pb2.ModuleInstance, _Mapping]]] = ..., total_instances: _Optional[int] = ...) -> None: ...

class SetTrafficWeightRequest(_message.Message):
    __slots__ = ("instance_id", "version", "weight")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    version: str
    weight: int
    def __init__(self, instance_id: _Optional[str] = ..., version: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class SetTrafficWeightResponse(_message.Message):
    __slots__ = ("success", "message", "current_config", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    current_config: _types_pb2.BlueGreenConfig
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., current_config: _Optional[_Union[_types_pb2.BlueGreenConfig, _Mapping]] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class GetActiveVersionRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class GetActiveVersionResponse(_message.Message):
    __slots__ = ("active_version", "config", "version_weights")
    class VersionWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VERSION_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    active_version: str
    config: _types_pb2.BlueGreenConfig
    version_weights: _containers.ScalarMap[str, int]
    def __init__(self, active_version: _Optional[str] = ..., config: _Optional[_Union[_types_pb2.BlueGreenConfig, _Mapping]] = ..., version_weights: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("instance_id", "target_version")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    target_version: str
    def __init__(self, instance_id: _Optional[str] = ..., target_version: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("success", "message", "previous_version", "current_version", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    previous_version: str
    current_version: str
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., previous_version: _Optional[str] = ..., current_version: _Optional[str] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class PromoteVersionRequest(_message.Message):
    __slots__ = ("instance_id", "version", "immediate", "promotion_rate")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMMEDIATE_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_RATE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    version: str
    immediate: bool
    promotion_rate: int
    def __init__(self, instance_id: _Optional[str] = ..., version: _Optional[str] = ..., immediate: _Optional[bool] = ..., promotion_rate: _Optional[int] = ...) -> None: ...

class PromoteVersionResponse(_message.Message):
    __slots__ = ("success", "message", "promoted_version", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    promoted_version: str
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., promoted_version: _Optional[str] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class HealthCheckRequest(_message.Message):
    __slots__ = ("instance_id", "deep_check")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DEEP_CHECK_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    deep_check: bool
    def __init__(self, instance_id: _Optional[str] = ..., deep_check: _Optional[bool] = ...) -> None: ...

class HealthCheckResponse(_message.Message):
    __slots__ = ("status", "message", "checks", "checked_at")
    class ChecksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.HealthStatus
    message: str
    checks: _containers.ScalarMap[str, str]
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[_Union[_types_pb2.HealthStatus, str]] = ..., message: _Optional[str] = ..., checks: _Optional[_Mapping[str, str]] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("instance_id", "reset_counters")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    RESET_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    reset_counters: bool
    def __init__(self, instance_id: _Optional[str] = ..., reset_counters: _Optional[bool] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _types_pb2.ModuleStats
    def __init__(self, stats: _Optional[_Union[_types_pb2.ModuleStats, _Mapping]] = ...) -> None: ...

class StreamMetricsRequest(_message.Message):
    __slots__ = ("instance_id", "interval_seconds", "metric_names")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    interval_seconds: int
    metric_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instance_id: _Optional[str] = ..., interval_seconds: _Optional[int] = ..., metric_names: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamMetricsResponse(_message.Message):
    __slots__ = ("metrics", "timestamp")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    metrics: _types_pb2.ModuleMetrics
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, metrics: _Optional[_Union[_types_pb2.ModuleMetrics, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ("instance_id", "config_type")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_TYPE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    config_type: str
    def __init__(self, instance_id: _Optional[str] = ..., config_type: _Optional[str] = ...) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("configs", "last_updated")
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_FIELD_NUMBER: _ClassVar[int]
    configs: _containers.RepeatedCompositeFieldContainer[_types_pb2.ConfigUpdate]
    last_updated: _timestamp_pb2.Timestamp
    def __init__(self, configs: _Optional[_Iterable[_Union[_types_pb2.ConfigUpdate, _Mapping]]] = ..., last_updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdateConfigRequest(_message.Message):
    __slots__ = ("instance_id", "config", "validate_only")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    config: _types_pb2.ConfigUpdate
    validate_only: bool
    def __init__(self, instance_id: _Optional[str] = ..., config: _Optional[_Union[_types_pb2.ConfigUpdate, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class UpdateConfigResponse(_message.Message):
    __slots__ = ("success", "message", "validation_passed", "validation_errors", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_PASSED_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    validation_passed: bool
    validation_errors: _containers.RepeatedScalarFieldContainer[str]
    error: _types_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., validation_passed: _Optional[bool] = ..., validation_errors: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...
