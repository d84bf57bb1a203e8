"""gRPC APIs: the MarchProxy ModuleService control plane and the ailb.v1 Gateway."""
