"""The S3-compatible API (issue 14): signature verification, aws-chunked bodies, S3's XML."""
