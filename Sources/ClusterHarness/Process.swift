import Foundation

/// True when this process runs as root: PostgreSQL refuses to, so server
/// programs then run as the `postgres` system user.
var runningAsRoot: Bool { getuid() == 0 }

/// The command line that runs `arguments` as the PostgreSQL server's owner.
func asServerOwner(_ arguments: [String]) -> [String] {
    runningAsRoot ? ["/usr/sbin/runuser", "-u", "postgres", "--"] + arguments : arguments
}

/// Runs a program to completion; returns stdout, throws with stderr on failure.
///
/// posix_spawn + waitpid rather than Foundation's Process: Process notices a
/// child's exit through a descriptor the child inherits, and `pg_ctl start`
/// leaves a server running that inherits it too, so Process never returns.
@discardableResult
func runCommand(_ arguments: [String]) throws -> String {
    guard !arguments.isEmpty else { throw HarnessError("empty command") }
    let stem = "/tmp/mmlite-cmd-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
    let outputPath = stem + ".out", errorPath = stem + ".err"
    defer { unlink(outputPath); unlink(errorPath) }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)

    // Run from /tmp: the server owner may not be allowed into our working
    // directory (CI clones under /root). GNU env -C changes directory first.
    let command = ["/usr/bin/env", "-C", "/tmp"] + arguments
    let argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, command[0], &actions, nil, argv, environ)
    guard spawned == 0 else {
        throw HarnessError("could not run \(arguments[0]): \(String(cString: strerror(spawned)))")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    let stdout = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    guard exitCode == 0 else {
        let stderr = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
        throw HarnessError("\(arguments.joined(separator: " ")) failed (exit \(exitCode)): \(stderr)\(stdout)")
    }
    return stdout
}

/// Makes `path` owned by the server owner (when root), so the server can write there.
func giveToServerOwner(_ path: String) throws {
    if runningAsRoot { try runCommand(["/bin/chown", "-R", "postgres:postgres", path]) }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HarnessError("socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw HarnessError("bind() failed") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw HarnessError("getsockname() failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}
