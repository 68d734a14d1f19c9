import Foundation
import PortcullisCore

/// The fields of one access-log line.
struct AccessRecord {
    var requestId: String
    var trace: TraceContext?
    var method: String
    var path: String
    var client: String
    var route: String?
    var status = 0
    var upstream: String?
    var upstreamStatus: Int?
    var durationMs = 0.0
    var upstreamMs: Double?
    var bytesSent = 0
    var error: String?
    var consumer: String?
    var credential: String?
    /// The route's rate-limit outcome, written as its `logSummary` (nil: the route has no limits).
    var limits: SharedRateLimitOutcome?
    /// The snippet location a `websocket` or `grpc` request was handed to (`websocket`, `grpc`).
    var handoff: String?
    /// The `grpc-status` of a refusal on a `grpc` route (its HTTP status is 200).
    var grpcStatus: Int?
    /// Each try of a retried request (a JSON array), only when there was more than one.
    var tries: [UInt8]?

    init(request: GatewayRequest) {
        requestId = request.requestId
        method = request.method
        path = request.path
        client = request.facts.clientAddress
    }

    /// Appends the JSON line (fields in documented order; optional fields only when set) to
    /// `buffer`, a loop's log buffer, without building it apart first. `mutating` although it
    /// changes nothing: the request task's stored record is then written in place, where a
    /// non-mutating call copied it first (every field retained and released).
    mutating func append(to buffer: inout ByteBuffer) {
        var w = JSONLineWriter(appendingTo: buffer)
        w.field("time") { RFC3339.append(Date(), milliseconds: true, to: &$0) }
        w.field("request_id", requestId)
        if let trace { w.field("trace_id") { trace.appendTraceIdHex(to: &$0) } }
        w.field("route", route)
        w.field("method", method)
        w.field("path", path)
        w.field("client", client)
        w.field("status", status)
        w.field("upstream", upstream)
        w.field("upstream_status", upstreamStatus.flatMap { $0 > 0 ? $0 : nil })
        w.field("duration_ms", milliseconds: durationMs)
        w.field("upstream_ms", milliseconds: upstreamMs)
        w.field("bytes_sent", bytesSent)
        if let handoff { w.field("handoff", handoff) }
        if let grpcStatus { w.field("grpc_status", grpcStatus) }
        if let consumer { w.field("consumer", consumer) }
        if let credential { w.field("credential", credential) }
        if let limits {
            w.field("limits", unescaped: { limits.outcome.appendLogSummary(jsonEscapedTo: &$0) })
        }
        if let tries { w.field("tries", rawJSON: tries) }
        if let error { w.field("error", error) }
        buffer = w.finishAppending()
    }
}

extension Duration {
    var milliseconds: Double {
        let (s, atto) = components
        return Double(s) * 1000 + Double(atto) / 1e15
    }
}
