//! A request body that is not the protobuf (or gRPC framing) its method expects is the caller's
//! fault, but tonic answers it `INTERNAL`, the code for the server's own failures. This layer
//! rewrites those answers to `INVALID_ARGUMENT`, keeping tonic's message (which names what
//! failed to decode). Only the decode errors tonic itself produces are rewritten: a handler's
//! own `INTERNAL` (a store failure) never starts with these words.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Code, Status};

/// How tonic's decode errors start (`prost::DecodeError`, and tonic's framing checks).
const DECODE_ERRORS: [&str; 4] = [
    "failed to decode Protobuf message",
    "protocol error: received message with",
    "Error decompressing",
    "Unexpected EOF decoding stream",
];

/// Whether `status` is tonic's answer to a request body it could not decode.
pub fn is_decode_error(status: &Status) -> bool {
    status.code() == Code::Internal
        && DECODE_ERRORS
            .iter()
            .any(|prefix| status.message().starts_with(prefix))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorsLayer;

impl<S> tower::Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors(inner)
    }
}

#[derive(Debug, Clone)]
pub struct DecodeErrors<S>(S);

impl<S, B, R> tower::Service<http::Request<B>> for DecodeErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.0.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            // A request that fails to decode is answered "trailers-only": the status is in the
            // response headers.
            if let Some(status) = Status::from_header_map(response.headers())
                && is_decode_error(&status)
            {
                let headers = response.headers_mut();
                headers.remove("grpc-status");
                headers.remove("grpc-message");
                headers.remove("grpc-status-details-bin");
                let _ =
                    Status::invalid_argument(format!("malformed request: {}", status.message()))
                        .add_header(headers);
            }
            Ok(response)
        })
    }
}
