"""Generated protobuf and gRPC code for the smolmesh.v1 contract. Do not edit."""
