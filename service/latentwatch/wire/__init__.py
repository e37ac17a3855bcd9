"""The wire contract's Python side: tensor codec, gRPC status errors, TLS and token
settings for both ends, and stub generation. The generated stubs live in
``latentwatch.v1``, the import path protoc derives from the proto package."""
