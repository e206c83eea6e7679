import FlyingFox
import FlyingSocks
import Foundation
import MMLiteCore

/// `mmlite exporter`: serves `MetricsCollector`'s exposition on GET /metrics
/// (FlyingFox's HTTP server). Each scrape re-reads the configuration and
/// observes the mesh on a thread of its own, so a slow scrape never holds the
/// server's tasks; nothing but GET /metrics and GET / is served.
public final class MetricsExporter: Sendable {
    let collector: MetricsCollector
    let address: ListenAddress
    private let server: HTTPServer

    public init(collector: MetricsCollector, address: ListenAddress) throws {
        self.collector = collector
        self.address = address
        let socketAddress: any SocketAddress = address.isIPv6
            ? try sockaddr_in6.inet6(ip6: address.host, port: address.port)
            : try sockaddr_in.inet(ip4: address.host, port: address.port)
        // Requests are read within 10 s; a scrape itself takes at most the collector's timeout (+1 s).
        server = HTTPServer(config: .init(address: socketAddress, timeout: 10, logger: .disabled))
    }

    /// Starts listening; returns the address actually bound (port 0 picks one).
    public func start() async throws -> ListenAddress {
        let collector = self.collector
        await server.appendRoute("GET /metrics") { _ in
            let (status, body) = await Self.scrape(collector)
            return HTTPResponse(statusCode: status, headers: [.contentType: status == .ok ? Exposition.contentType : "text/plain; charset=utf-8"],
                                body: Data(body.utf8))
        }
        await server.appendRoute("GET /") { _ in
            HTTPResponse(statusCode: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                         body: Data("mmlite exporter \(MMLiteCore.version): metrics at /metrics\n".utf8))
        }
        let server = self.server
        Task { try? await server.run() }
        try await server.waitUntilListening(timeout: 10)
        guard case .ip4(let host, let port)? = await server.listeningAddress else {
            if case .ip6(let host, let port)? = await server.listeningAddress { return ListenAddress(host: host, port: port) }
            return address
        }
        return ListenAddress(host: host, port: port)
    }

    public func stop() async {
        await server.stop(timeout: 2)
    }

    /// One observation, on its own thread (the queries block).
    static func scrape(_ collector: MetricsCollector) async -> (HTTPStatusCode, String) {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                do {
                    continuation.resume(returning: (.ok, try collector.collect().exposition))
                } catch let error as CLIError {
                    continuation.resume(returning: (.internalServerError, collector.console.redact("mmlite: " + error.message) + "\n"))
                } catch {
                    continuation.resume(returning: (.internalServerError, collector.console.redact("mmlite: \(error)") + "\n"))
                }
            }
        }
    }

    /// `mmlite exporter`: listens until the process is stopped.
    static func serve(collector: MetricsCollector, address: ListenAddress) throws -> ExitStatus {
        let exporter = try MetricsExporter(collector: collector, address: address)
        let failure = Failure()
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                let bound = try await exporter.start()
                collector.console.print("mmlite exporter: serving the mesh of \(collector.configPath) on http://\(bound)/metrics")
            } catch {
                failure.set("cannot listen on \(address): \(error)")
                done.signal()
            }
        }
        done.wait()
        throw CLIError(.unavailable, failure.message ?? "the exporter stopped")
    }

    private final class Failure: @unchecked Sendable {
        private let lock = NSLock()
        private var text: String?
        func set(_ message: String) { lock.lock(); text = message; lock.unlock() }
        var message: String? { lock.lock(); defer { lock.unlock() }; return text }
    }
}
