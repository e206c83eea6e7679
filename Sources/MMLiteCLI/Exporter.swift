import Foundation
import MMLiteCore

/// `mmlite exporter`: serves `MetricsCollector`'s exposition on GET /metrics.
/// Each scrape re-reads the configuration and observes the mesh on the
/// request's own thread; nothing but GET /metrics and GET / is served.
public final class MetricsExporter: Sendable {
    let collector: MetricsCollector
    private let server: HTTPServer

    /// Binds `address` (port 0: a free port; see `address` afterwards).
    public init(collector: MetricsCollector, address: ListenAddress) throws {
        self.collector = collector
        server = try HTTPServer(listen: address) { request in Self.respond(to: request, collector: collector) }
    }

    /// The address listened on.
    public var address: ListenAddress { server.address }

    public func start() { server.start() }
    public func stop() { server.stop() }

    static func respond(to request: HTTPRequestHead, collector: MetricsCollector) -> HTTPServer.Response {
        switch request.path {
        case "/metrics":
            do {
                return HTTPServer.Response(status: 200, contentType: Exposition.contentType, body: try collector.collect().exposition)
            } catch let error as CLIError {
                return HTTPServer.Response(status: 500, body: collector.console.redact("mmlite: " + error.message) + "\n")
            } catch {
                return HTTPServer.Response(status: 500, body: collector.console.redact("mmlite: \(error)") + "\n")
            }
        case "/":
            return HTTPServer.Response(status: 200, body: "mmlite exporter \(MMLiteCore.version): metrics at /metrics\n")
        default:
            return HTTPServer.Response(status: 404, body: "not found: metrics are at /metrics\n")
        }
    }

    /// `mmlite exporter`: listens until the process is stopped.
    static func serve(collector: MetricsCollector, address: ListenAddress) throws -> ExitStatus {
        let exporter = try MetricsExporter(collector: collector, address: address)
        collector.console.print("mmlite exporter: serving the mesh of \(collector.configPath) on http://\(exporter.address)/metrics")
        exporter.start()
        while true { sleep(3600) }
    }
}
