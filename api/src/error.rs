//! Every error the API returns is JSON naming what went wrong, with the right status:
//! 400 for a bad parameter (never a 500, unlike datagrepper), 404 for an unknown plugin or
//! message, 503 when ClickHouse cannot be reached or does not answer within
//! `api.request-timeout` (the service recovers by itself when it returns).

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// A short machine-readable code: `bad_parameter`, `bad_request`, `not_found`,
    /// `unavailable`, `timeout`.
    pub error: String,
    /// The parameter at fault, when there is one.
    #[oai(skip_serializing_if_is_none)]
    pub parameter: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
}

#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// A parameter is invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No such plugin or message.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// ClickHouse is unreachable or failed.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl ApiError {
    pub fn bad_parameter(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(Json(ErrorBody {
            error: "bad_parameter".into(),
            parameter: Some(parameter.to_string()),
            message: message.into(),
        }))
    }

    /// A request that is wrong as a whole rather than in one parameter.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(Json(ErrorBody {
            error: "bad_request".into(),
            parameter: None,
            message: message.into(),
        }))
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(Json(ErrorBody {
            error: "not_found".into(),
            parameter: None,
            message: message.into(),
        }))
    }

    pub fn unavailable(error: clickhouse::error::Error) -> ApiError {
        tracing::warn!(%error, "ClickHouse query failed");
        ApiError::Unavailable(Json(ErrorBody {
            error: "unavailable".into(),
            parameter: None,
            message: "the statistics store is unavailable; try again shortly".into(),
        }))
    }
}

/// The answer to a request that outlived `api.request-timeout`: the store is too slow to answer
/// in time, which for a client is the same as unavailable (503), so it may retry later.
pub fn timed_out(limit: std::time::Duration) -> poem::Response {
    use poem::IntoResponse;
    tracing::warn!(?limit, "request timed out");
    let body = ErrorBody {
        error: "timeout".into(),
        parameter: None,
        message: format!("no answer within {limit:?}; try again shortly or narrow the query"),
    };
    (poem::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// The answer when a handler panicked: a bug of ours, logged, answered with the same JSON shape
/// rather than a dropped connection.
pub fn panicked(_payload: Box<dyn std::any::Any + Send + 'static>) -> poem::Response {
    use poem::IntoResponse;
    tracing::error!("a request handler panicked");
    let body = ErrorBody {
        error: "internal".into(),
        parameter: None,
        message: "internal error".into(),
    };
    (poem::http::StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

/// Turns any error poem produced itself (a parameter that is not a number, a route that does
/// not exist) into the same JSON shape, so clients never have to parse plain text.
pub fn render_poem_error(error: poem::Error) -> poem::Response {
    use poem::IntoResponse;
    let status = error.status();
    if let Some(parse_error) = error.downcast_ref::<poem_openapi::error::ParseParamError>() {
        let body = ErrorBody {
            error: "bad_parameter".into(),
            parameter: Some(parse_error.name.to_string()),
            message: parse_error.reason.clone(),
        };
        return (poem::http::StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    if error.is_from_response() {
        return error.into_response();
    }
    let code = match status {
        poem::http::StatusCode::NOT_FOUND => "not_found",
        poem::http::StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        status if status.is_client_error() => "bad_request",
        _ => "internal",
    };
    let body = ErrorBody {
        error: code.into(),
        parameter: None,
        message: error.to_string(),
    };
    let mut response = (status, Json(body)).into_response();
    // Every route is read-only: RFC 9110 asks a 405 to say which methods are allowed.
    if status == poem::http::StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().insert(
            poem::http::header::ALLOW,
            poem::http::HeaderValue::from_static("GET, HEAD"),
        );
    }
    response
}
