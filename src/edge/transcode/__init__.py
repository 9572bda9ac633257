"""gRPC-JSON transcoding: HttpRule path templates and the pieces that map HTTP requests onto gRPC methods."""
