import Foundation
import MMLiteCore
#if canImport(Glibc)
import Glibc
#endif

/// The exporter's HTTP server: a blocking accept loop on its own thread and
/// one thread per connection, at most `maxConnections` at once (more get 503
/// at once). Each connection carries one request (`Connection: close`), whose
/// head must arrive within 10 s and fit in 16 KiB; bodies are not read.
/// Written by hand rather than taken from a package: every HTTP package on
/// the machine's list links Foundation's URLSession (libcurl) or SwiftNIO,
/// and serving one GET needs neither (docs/monitoring.md).
final class HTTPServer: @unchecked Sendable {
    struct Response: Sendable {
        var status: Int
        var contentType = "text/plain; charset=utf-8"
        var body: String
    }
    typealias Handler = @Sendable (HTTPRequestHead) -> Response

    let address: ListenAddress
    private let socket: Int32
    private let handler: Handler
    private let slots: DispatchSemaphore
    private let lock = NSLock()
    private var stopped = false

    static let maxConnections = 16
    static let maxHeadBytes = 16 * 1024
    static let ioTimeoutSeconds = 10

    /// Binds and listens (port 0: the kernel picks one; `address` tells which).
    init(listen: ListenAddress, handler: @escaping Handler) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(listen.host, String(listen.port), &hints, &list)
        guard status == 0, let info = list else {
            throw CLIError(.unavailable, "cannot listen on \(listen): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        let fd = Glibc.socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard fd >= 0 else { throw CLIError(.unavailable, "cannot listen on \(listen): \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0, Glibc.listen(fd, 64) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw CLIError(.unavailable, "cannot listen on \(listen): \(message)")
        }
        socket = fd
        self.handler = handler
        slots = DispatchSemaphore(value: Self.maxConnections)
        address = ListenAddress(host: listen.host, port: Self.boundPort(fd) ?? listen.port)
    }

    private static func boundPort(_ fd: Int32) -> UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET: return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } }
        case AF_INET6: return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
        default: return nil
        }
    }

    /// Serves on a thread of its own until `stop()`.
    func start() {
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    func stop() {
        lock.lock()
        let already = stopped
        stopped = true
        lock.unlock()
        guard !already else { return }
        shutdown(socket, Int32(SHUT_RDWR))
        close(socket)
    }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }

    private func acceptLoop() {
        while !isStopped {
            let client = accept(socket, nil, nil)
            guard client >= 0 else {
                if isStopped { return }
                if errno == EMFILE || errno == ENFILE { usleep(100_000) }
                continue
            }
            guard slots.wait(timeout: .now()) == .success else {
                Self.configure(client)
                Self.send(client, Self.render(Response(status: 503, body: "too many connections\n"), includeBody: true))
                close(client)
                continue
            }
            Thread.detachNewThread { [self] in
                defer { slots.signal(); close(client) }
                serve(client)
            }
        }
    }

    private static func configure(_ client: Int32) {
        var timeout = timeval(tv_sec: ioTimeoutSeconds, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    private func serve(_ client: Int32) {
        Self.configure(client)
        var head: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while HTTPRequestHead.endOfHead(in: head) == nil {
            guard head.count < Self.maxHeadBytes else {
                Self.send(client, Self.render(Response(status: 431, body: "request head too large\n"), includeBody: true))
                return
            }
            let count = recv(client, &buffer, buffer.count, 0)
            guard count > 0 else { return }  // closed, or no complete head within the timeout
            head += buffer[0..<count]
        }
        guard let request = HTTPRequestHead(String(decoding: head, as: UTF8.self)) else {
            Self.send(client, Self.render(Response(status: 400, body: "bad request\n"), includeBody: true))
            return
        }
        let response = request.method == "GET" || request.method == "HEAD"
            ? handler(request) : Response(status: 405, body: "only GET\n")
        Self.send(client, Self.render(response, includeBody: request.method != "HEAD"))
    }

    static func render(_ response: Response, includeBody: Bool) -> [UInt8] {
        let body = Array(response.body.utf8)
        let head = "HTTP/1.1 \(response.status) \(HTTPRequestHead.reason(response.status))\r\n"
            + "Content-Type: \(response.contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + (includeBody ? body : [])
    }

    private static func send(_ client: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { return }
            offset += sent
        }
    }
}
