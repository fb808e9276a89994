"""Generated protobuf and gRPC code for the mesh.v1 contract. Do not edit."""
