import Foundation

/// True when this process runs as root: PostgreSQL refuses to, so server
/// programs then run as the `postgres` system user.
package var runningAsRoot: Bool { getuid() == 0 }

/// The command line that runs `arguments` as the PostgreSQL server's owner.
package func asServerOwner(_ arguments: [String]) -> [String] {
    runningAsRoot ? ["/usr/sbin/runuser", "-u", "postgres", "--"] + arguments : arguments
}

/// Runs a program to completion; returns stdout, throws with stderr on failure.
///
/// Runs from /tmp: the server owner may not be allowed into our working
/// directory (CI clones under /root). GNU env -C changes directory first.
@discardableResult
package func runCommand(_ arguments: [String]) throws -> String {
    guard !arguments.isEmpty else { throw ClusterError("empty command") }
    let stem = "/tmp/mmlite-cmd-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
    let outputPath = stem + ".out", errorPath = stem + ".err"
    defer { unlink(outputPath); unlink(errorPath) }
    let child = try ChildProcess(["/usr/bin/env", "-C", "/tmp"] + arguments, outputPath: outputPath, errorPath: errorPath)
    let exitCode = child.wait()
    guard exitCode == 0 else {
        throw ClusterError("\(arguments.joined(separator: " ")) failed (exit \(exitCode)): \(child.errorOutput)\(child.output)")
    }
    return child.output
}

/// Makes `path` owned by the server owner (when root), so the server can write there.
package func giveToServerOwner(_ path: String) throws {
    if runningAsRoot { try runCommand(["/bin/chown", "-R", "postgres:postgres", path]) }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
package func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ClusterError("socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw ClusterError("bind() failed") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw ClusterError("getsockname() failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}
