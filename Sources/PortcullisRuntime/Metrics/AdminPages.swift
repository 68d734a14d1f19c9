import PortcullisCore

/// The gateway's own pages, served by the worker to requests nginx sends from its
/// `/_portcullis/` location (`PORTCULLIS_ADMIN 1`; the shipped snippet allows loopback only):
/// `GET /_portcullis/metrics` (Prometheus text) and `GET /_portcullis/` (the status page).
/// Anything else there is a problem+json 404 or 405. These requests are not routed and not
/// counted in the request metrics (a scraper would otherwise measure itself).
enum AdminPages {
    static let prefix = "/_portcullis/"

    static func serve(_ request: GatewayRequest, gateway: Gateway, exchange: GatewayExchange) {
        let page = request.path.hasPrefix(prefix) ? String(request.path.dropFirst(prefix.count)) : nil
        guard page == "metrics" || page == "" || page == "status" else {
            return exchange.sendProblem(.notFound(path: request.path), requestId: request.requestId)
        }
        guard request.method == "GET" || request.method == "HEAD" else {
            return exchange.sendProblem(.methodNotAllowed(request.method, allowed: ["GET", "HEAD"]), requestId: request.requestId)
        }
        let body: [UInt8]
        var headers = HTTPHeaders()
        headers.add("Cache-Control", "no-store")
        if page == "metrics" {
            guard let segment = gateway.metricsSegment else {
                return exchange.sendProblem(
                    ProblemDetails(status: 503, type: "metrics-unavailable", title: "Service Unavailable",
                                   detail: "the metrics file is not mapped (the worker was not started by a master)"),
                    requestId: request.requestId)
            }
            body = Array(PrometheusText.render(segment.snapshot(rateTable: gateway.rateTable, upstreams: gateway.upstreamTable), version: PortcullisVersion.current).utf8)
            headers.add("Content-Type", PrometheusText.contentType)
        } else {
            body = StatusPage.html
            headers.add("Content-Type", "text/html; charset=utf-8")
        }
        headers.add("Content-Length", String(body.count))
        exchange.sendHead(status: 200, headers: headers)
        if request.method == "GET" { exchange.sendBody(body) }
    }
}
