import CLibPQ
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One libpq connection. Connection strings are libpq's own (key=value or
/// postgresql:// URI) and libpq applies `PG*` variables, `~/.pgpass`,
/// `PGPASSFILE` and service files exactly as psql does.
///
/// Not thread-safe: use one connection per thread, as with libpq itself.
public final class PGConnection {
    private var handle: OpaquePointer?
    private var noticeBox: NoticeBox

    /// Server messages below ERROR (NOTICE, WARNING) received so far.
    public var notices: [String] { noticeBox.notices }

    /// Connects with `conninfo`; `overrides` win over what it says
    /// (e.g. `["replication": "database", "application_name": "mmlite"]`).
    public init(_ conninfo: String, overrides: [String: String] = [:]) throws {
        var keys = ["dbname"]
        var values = [conninfo]
        for (key, value) in overrides.sorted(by: { $0.key < $1.key }) {
            keys.append(key)
            values.append(value)
        }
        let conn = withCStringArray(keys) { keyPointers in
            withCStringArray(values) { valuePointers in
                PQconnectdbParams(keyPointers, valuePointers, 1)
            }
        }
        guard let conn else {
            throw PGError(kind: .connection, message: "out of memory allocating a libpq connection")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(conn)).trimmingTrailingNewlines()
            PQfinish(conn)
            throw PGError(kind: .connection, message: message)
        }
        handle = conn
        noticeBox = NoticeBox()
        let context = Unmanaged.passUnretained(noticeBox).toOpaque()
        PQsetNoticeReceiver(conn, { context, result in
            guard let context, let result else { return }
            let box = Unmanaged<NoticeBox>.fromOpaque(context).takeUnretainedValue()
            box.notices.append(String(cString: PQresultErrorMessage(result)).trimmingTrailingNewlines())
        }, context)
    }

    deinit { close() }

    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    public var isOpen: Bool {
        guard let handle else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// e.g. 150020 for 15.20, 180006 for 18.6.
    public var serverVersionNumber: Int {
        guard let handle else { return 0 }
        return Int(PQserverVersion(handle))
    }

    public var serverMajorVersion: Int { serverVersionNumber / 10000 }

    /// A server parameter reported at connection start (server_version, ...).
    public func parameterStatus(_ name: String) -> String? {
        guard let handle, let value = PQparameterStatus(handle, name) else { return nil }
        return String(cString: value)
    }

    /// Backend process id of this session.
    public var backendPID: Int32 {
        guard let handle else { return 0 }
        return PQbackendPID(handle)
    }

    /// The connection's socket (-1 when closed). Only for `shutdown(2)` from
    /// another thread, to end a wait on a server that stopped answering.
    public var socket: Int32 {
        guard let handle else { return -1 }
        return PQsocket(handle)
    }

    /// Runs one or more statements with the simple-query protocol (what psql
    /// does); returns the last statement's result. Also the way to send
    /// replication commands on a `replication=database` connection.
    @discardableResult
    public func execute(_ sql: String) throws -> PGResult {
        let conn = try liveHandle()
        return try consume(PQexec(conn, sql), conn: conn)
    }

    /// Runs one statement with `$1, $2, ...` parameters sent separately (text
    /// format; nil is NULL). Never interpolate values into SQL: use this.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws -> PGResult {
        let conn = try liveHandle()
        let result: OpaquePointer? = withOptionalCStringArray(parameters) { values in
            PQexecParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        return try consume(result, conn: conn)
    }

    /// Sends one parameterised statement without waiting for its result, so
    /// that several servers work at once; `receive()` collects it. Nothing else
    /// may be sent on this connection until then.
    public func send(_ sql: String, _ parameters: [String?] = []) throws {
        let conn = try liveHandle()
        let sent = withOptionalCStringArray(parameters) { values in
            PQsendQueryParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        guard sent == 1 else { throw connectionError(conn) }
    }

    /// The result of the statement `send` sent (waits for it).
    @discardableResult
    public func receive() throws -> PGResult {
        let conn = try liveHandle()
        var last: PGResult?
        var firstError: Error?
        while let result = PQgetResult(conn) {
            do {
                let read = try consume(result, conn: conn, free: false)
                if last == nil { last = read }
            } catch {
                if firstError == nil { firstError = error }
            }
            PQclear(result)
        }
        if let firstError { throw firstError }
        guard let last else { throw connectionError(conn) }
        return last
    }

    /// `COPY ... TO STDOUT`: hands each chunk (a row in text/CSV formats, a
    /// piece of the stream in binary) to `sink`. Returns the rows copied.
    @discardableResult
    public func copyOut(_ sql: String, into sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        let conn = try liveHandle()
        guard let start = PQexec(conn, sql) else { throw connectionError(conn) }
        let status = PQresultStatus(start)
        guard status == PGRES_COPY_OUT else {
            defer { PQclear(start) }
            if status == PGRES_FATAL_ERROR { throw PGError(result: start) }
            throw PGError(kind: .client, message: "statement did not start COPY TO STDOUT: \(sql)")
        }
        PQclear(start)
        var sinkError: Error?
        while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let length = PQgetCopyData(conn, &buffer, 0)
            if length > 0, let buffer {
                if sinkError == nil {
                    do { try sink(UnsafeRawBufferPointer(start: buffer, count: Int(length))) }
                    catch { sinkError = error }
                }
                PQfreemem(buffer)
                continue
            }
            if length == -2 { throw connectionError(conn) }
            break  // -1: COPY done
        }
        let final = try drainResults(conn)
        if let sinkError { throw sinkError }
        return final.affectedRows ?? 0
    }

    /// `COPY ... FROM STDIN`: pulls chunks from `source` until it returns nil.
    /// If `source` throws, the COPY is aborted on the server (nothing lands).
    @discardableResult
    public func copyIn(_ sql: String, from source: () throws -> [UInt8]?) throws -> Int {
        let conn = try liveHandle()
        guard let start = PQexec(conn, sql) else { throw connectionError(conn) }
        let status = PQresultStatus(start)
        guard status == PGRES_COPY_IN else {
            defer { PQclear(start) }
            if status == PGRES_FATAL_ERROR { throw PGError(result: start) }
            throw PGError(kind: .client, message: "statement did not start COPY FROM STDIN: \(sql)")
        }
        PQclear(start)
        do {
            while let chunk = try source() {
                let sent = chunk.withUnsafeBufferPointer { buffer in
                    buffer.baseAddress.map { base in
                        base.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                            PQputCopyData(conn, $0, Int32(buffer.count))
                        }
                    } ?? 1
                }
                if sent != 1 { throw connectionError(conn) }
            }
        } catch {
            _ = PQputCopyEnd(conn, "aborted by mmlite: \(error)")
            _ = try? drainResults(conn)
            throw error
        }
        guard PQputCopyEnd(conn, nil) == 1 else { throw connectionError(conn) }
        return try drainResults(conn).affectedRows ?? 0
    }

    /// Streams `COPY ... TO STDOUT` on this connection straight into
    /// `COPY ... FROM STDIN` on `target`; `progress` gets the bytes so far.
    /// Rows are passed on in chunks of about `chunkSize` bytes, not one
    /// CopyData message per row: the receiving server then parses a few
    /// large messages (psql collects up to 8 kB per message), and this
    /// process copies each row once and makes one libpq call per chunk. The
    /// COPY stream is the same bytes either way.
    @discardableResult
    public func copy(_ outSQL: String, to target: PGConnection, _ inSQL: String,
                     chunkSize: Int = 64 * 1024, progress: ((Int) -> Void)? = nil) throws -> Int {
        let conn = try liveHandle()
        guard let start = PQexec(conn, outSQL) else { throw connectionError(conn) }
        guard PQresultStatus(start) == PGRES_COPY_OUT else {
            defer { PQclear(start) }
            throw PGError(result: start)
        }
        PQclear(start)
        var bytes = 0
        var done = false
        var chunk: [UInt8] = []
        chunk.reserveCapacity(chunkSize + 16 * 1024)
        let rows = try target.copyIn(inSQL) {
            if done { return nil }
            chunk.removeAll(keepingCapacity: true)
            while chunk.count < chunkSize {
                var buffer: UnsafeMutablePointer<CChar>?
                let length = PQgetCopyData(conn, &buffer, 0)
                if length > 0, let buffer {
                    chunk.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: Int(length)))
                    PQfreemem(buffer)
                    bytes += Int(length)
                    continue
                }
                if length == -2 { throw self.connectionError(conn) }
                done = true  // -1: COPY done
                break
            }
            progress?(bytes)
            return chunk.isEmpty ? nil : chunk
        }
        _ = try drainResults(conn)
        return rows
    }

    // MARK: - Internals

    private func liveHandle() throws -> OpaquePointer {
        guard let handle else { throw PGError(kind: .connection, message: "connection is closed") }
        return handle
    }

    private func connectionError(_ conn: OpaquePointer) -> PGError {
        PGError(kind: PQstatus(conn) == CONNECTION_OK ? .server : .connection,
                message: String(cString: PQerrorMessage(conn)).trimmingTrailingNewlines())
    }

    /// Reads and frees every pending result; throws the first error.
    private func drainResults(_ conn: OpaquePointer) throws -> PGResult {
        var last = PGResult(columns: [], rows: [], commandTag: "")
        var firstError: PGError?
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) == PGRES_FATAL_ERROR {
                if firstError == nil { firstError = PGError(result: result) }
            } else {
                last = PGResult(columns: [], rows: [], commandTag: String(cString: PQcmdStatus(result)))
            }
            PQclear(result)
        }
        if let firstError { throw firstError }
        return last
    }

    private func consume(_ result: OpaquePointer?, conn: OpaquePointer, free: Bool = true) throws -> PGResult {
        guard let result else { throw connectionError(conn) }
        defer { if free { PQclear(result) } }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return Self.read(result)
        case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
            throw PGError(kind: .client, message: "use copyIn/copyOut for COPY statements")
        default:
            var error = PGError(result: result)
            if PQstatus(conn) != CONNECTION_OK { error.kind = .connection }
            throw error
        }
    }

    private static func read(_ result: OpaquePointer) -> PGResult {
        let columnCount = PQnfields(result)
        let rowCount = PQntuples(result)
        var columns: [String] = []
        columns.reserveCapacity(Int(columnCount))
        for column in 0..<columnCount {
            columns.append(PQfname(result, column).map { String(cString: $0) } ?? "?column?")
        }
        var rows: [[String?]] = []
        rows.reserveCapacity(Int(rowCount))
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(Int(columnCount))
            for column in 0..<columnCount {
                if PQgetisnull(result, row, column) == 1 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, row, column)))
                }
            }
            rows.append(values)
        }
        return PGResult(columns: columns, rows: rows, commandTag: String(cString: PQcmdStatus(result)))
    }
}

/// Parses a connection string with libpq itself; throws libpq's message if it
/// is not one. Returns the keywords that were set, in libpq's order.
public func parseConninfo(_ conninfo: String) throws -> [(key: String, value: String)] {
    var errorMessage: UnsafeMutablePointer<CChar>?
    guard let options = PQconninfoParse(conninfo, &errorMessage) else {
        defer { if let errorMessage { PQfreemem(errorMessage) } }
        let text = errorMessage.map { String(cString: $0).trimmingTrailingNewlines() } ?? "invalid connection string"
        throw PGError(kind: .client, message: text)
    }
    defer { PQconninfoFree(options) }
    var pairs: [(key: String, value: String)] = []
    var option = options
    while let keyword = option.pointee.keyword {
        if let value = option.pointee.val {
            pairs.append((String(cString: keyword), String(cString: value)))
        }
        option += 1
    }
    return pairs
}

private final class NoticeBox {
    var notices: [String] = []
}

private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let duplicated: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { duplicated.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = duplicated.map { $0.map { UnsafePointer($0) } }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

private func withOptionalCStringArray<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let duplicated: [UnsafeMutablePointer<CChar>?] = strings.map { $0.flatMap { strdup($0) } }
    defer { duplicated.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = duplicated.map { $0.map { UnsafePointer($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// The environment variables (PGHOST, PGPORT, PGUSER, ...) that make a libpq
/// client started as a child process connect as `conninfo` says, without the
/// connection string on its command line. The password is returned apart:
/// pass it through a password file (see `PasswordFile`), never argv.
public func conninfoEnvironment(_ conninfo: String) throws -> (environment: [String: String], password: String?) {
    var variables: [String: String] = [:]
    if let defaults = PQconndefaults() {
        defer { PQconninfoFree(defaults) }
        var option = defaults
        while let keyword = option.pointee.keyword {
            if let envvar = option.pointee.envvar { variables[String(cString: keyword)] = String(cString: envvar) }
            option += 1
        }
    }
    var environment: [String: String] = [:]
    var password: String?
    for (key, value) in try parseConninfo(conninfo) {
        if key == "password" { password = value; continue }
        if let name = variables[key] { environment[name] = value }
    }
    return (environment, password)
}
