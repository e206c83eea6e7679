/// Decoder for pgoutput's logical replication protocol, version 1 (the
/// messages `pg_logical_slot_peek_binary_changes(..., 'proto_version', '1',
/// 'publication_names', ...)` returns, one message per row; the mmlite plugin
/// speaks the same protocol). Pure: used by `mmlite resolve --skip` and
/// `status` to show which transaction a stuck subscription fails on. Tables
/// are treated generically (column names and text values), never by layout.
/// Reference: PostgreSQL's src/backend/replication/logical/proto.c.
public enum PgOutput {
    public struct DecodeError: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public struct Column: Sendable, Equatable {
        public var name: String
        public var typeOID: UInt32
        /// Part of the replica identity (flag bit 1 in the Relation message).
        public var isKey: Bool
        public init(name: String, typeOID: UInt32, isKey: Bool) {
            self.name = name
            self.typeOID = typeOID
            self.isKey = isKey
        }
    }

    public struct Relation: Sendable, Equatable {
        public var oid: UInt32
        /// Empty for pg_catalog (as pgoutput sends it).
        public var schema: String
        public var name: String
        public var replicaIdentity: UInt8
        public var columns: [Column]
        public init(oid: UInt32, schema: String, name: String, replicaIdentity: UInt8, columns: [Column]) {
            self.oid = oid
            self.schema = schema
            self.name = name
            self.replicaIdentity = replicaIdentity
            self.columns = columns
        }
        /// `schema.table` (as in mmlite.conflicts.table_name).
        public var qualifiedName: String { (schema.isEmpty ? "pg_catalog" : schema) + "." + name }
    }

    public enum Value: Sendable, Equatable {
        case null
        /// 'u': a TOASTed value that did not change (not sent).
        case unchangedToast
        case text(String)
        /// 'b' (binary mode; not requested by mmlite, decoded for completeness).
        case binary([UInt8])
    }

    public enum Message: Sendable, Equatable {
        case begin(finalLSN: LSN, commitTime: Int64, xid: UInt32)
        case commit(flags: UInt8, commitLSN: LSN, endLSN: LSN, commitTime: Int64)
        case origin(lsn: LSN, name: String)
        case relation(Relation)
        case type(oid: UInt32, schema: String, name: String)
        case insert(relation: UInt32, new: [Value])
        /// `oldKind` is 'K' (key columns only) or 'O' (the whole old row), nil when not sent.
        case update(relation: UInt32, oldKind: UInt8?, old: [Value]?, new: [Value])
        case delete(relation: UInt32, oldKind: UInt8, old: [Value])
        case truncate(options: UInt8, relations: [UInt32])
        case logicalMessage(transactional: Bool, lsn: LSN, prefix: String, content: [UInt8])
    }

    /// Decodes one protocol message.
    public static func decode(_ bytes: [UInt8]) throws -> Message {
        var reader = Reader(bytes: bytes)
        let tag = try reader.byte()
        let message: Message
        switch tag {
        case UInt8(ascii: "B"):
            message = .begin(finalLSN: LSN(try reader.uint64()), commitTime: try reader.int64(), xid: try reader.uint32())
        case UInt8(ascii: "C"):
            message = .commit(flags: try reader.byte(), commitLSN: LSN(try reader.uint64()), endLSN: LSN(try reader.uint64()),
                              commitTime: try reader.int64())
        case UInt8(ascii: "O"):
            message = .origin(lsn: LSN(try reader.uint64()), name: try reader.string())
        case UInt8(ascii: "R"):
            let oid = try reader.uint32()
            let schema = try reader.string()
            let name = try reader.string()
            let identity = try reader.byte()
            let count = Int(try reader.int16())
            guard count >= 0 else { throw DecodeError("negative column count in Relation") }
            var columns: [Column] = []
            for _ in 0..<count {
                let flags = try reader.byte()
                let column = try reader.string()
                let type = try reader.uint32()
                _ = try reader.uint32()  // typmod
                columns.append(Column(name: column, typeOID: type, isKey: flags & 1 != 0))
            }
            message = .relation(Relation(oid: oid, schema: schema, name: name, replicaIdentity: identity, columns: columns))
        case UInt8(ascii: "Y"):
            message = .type(oid: try reader.uint32(), schema: try reader.string(), name: try reader.string())
        case UInt8(ascii: "I"):
            let relation = try reader.uint32()
            try reader.expect("N", in: "Insert")
            message = .insert(relation: relation, new: try reader.tuple())
        case UInt8(ascii: "U"):
            let relation = try reader.uint32()
            var kind = try reader.byte()
            var oldKind: UInt8? = nil
            var old: [Value]? = nil
            if kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") {
                oldKind = kind
                old = try reader.tuple()
                kind = try reader.byte()
            }
            guard kind == UInt8(ascii: "N") else { throw DecodeError("Update: expected 'N', got \(printable(kind))") }
            message = .update(relation: relation, oldKind: oldKind, old: old, new: try reader.tuple())
        case UInt8(ascii: "D"):
            let relation = try reader.uint32()
            let kind = try reader.byte()
            guard kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") else {
                throw DecodeError("Delete: expected 'K' or 'O', got \(printable(kind))")
            }
            message = .delete(relation: relation, oldKind: kind, old: try reader.tuple())
        case UInt8(ascii: "T"):
            let count = Int(try reader.uint32())
            let options = try reader.byte()
            guard count <= bytes.count else { throw DecodeError("Truncate: \(count) relations in \(bytes.count) bytes") }
            var relations: [UInt32] = []
            for _ in 0..<count { relations.append(try reader.uint32()) }
            message = .truncate(options: options, relations: relations)
        case UInt8(ascii: "M"):
            let flags = try reader.byte()
            let lsn = LSN(try reader.uint64())
            let prefix = try reader.string()
            let length = Int(try reader.uint32())
            message = .logicalMessage(transactional: flags & 1 != 0, lsn: lsn, prefix: prefix, content: try reader.bytes(length))
        default:
            throw DecodeError("unknown message type \(printable(tag))")
        }
        return message
    }

    /// `\x...` (bytea's hex text form) to bytes.
    public static func bytes(fromHex text: String) throws -> [UInt8] {
        var hex = Substring(text)
        if hex.hasPrefix("\\x") { hex = hex.dropFirst(2) }
        guard hex.utf8.count % 2 == 0 else { throw DecodeError("odd number of hex digits") }
        var result: [UInt8] = []
        result.reserveCapacity(hex.utf8.count / 2)
        var high: UInt8? = nil
        for char in hex.utf8 {
            let nibble: UInt8
            switch char {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = char - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = char - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = char - UInt8(ascii: "A") + 10
            default: throw DecodeError("not a hex digit: \(printable(char))")
            }
            if let h = high { result.append(h << 4 | nibble); high = nil } else { high = nibble }
        }
        return result
    }

    static func printable(_ byte: UInt8) -> String {
        (0x21...0x7e).contains(byte) ? "'\(Character(UnicodeScalar(byte)))'" : "0x" + String(byte, radix: 16)
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func byte() throws -> UInt8 {
            guard offset < bytes.count else { throw DecodeError("message ends early at byte \(offset)") }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func bytes(_ count: Int) throws -> [UInt8] {
            guard count >= 0, count <= bytes.count - offset else {
                throw DecodeError("message ends early: \(count) bytes wanted at byte \(offset) of \(bytes.count)")
            }
            defer { offset += count }
            return Array(bytes[offset..<(offset + count)])
        }

        mutating func uint64() throws -> UInt64 {
            var value: UInt64 = 0
            for byte in try bytes(8) { value = value << 8 | UInt64(byte) }
            return value
        }
        mutating func int64() throws -> Int64 { Int64(bitPattern: try uint64()) }
        mutating func uint32() throws -> UInt32 {
            var value: UInt32 = 0
            for byte in try bytes(4) { value = value << 8 | UInt32(byte) }
            return value
        }
        mutating func int16() throws -> Int16 {
            let pair = try bytes(2)
            return Int16(bitPattern: UInt16(pair[0]) << 8 | UInt16(pair[1]))
        }

        /// A NUL-terminated string.
        mutating func string() throws -> String {
            guard let end = bytes[offset...].firstIndex(of: 0) else { throw DecodeError("unterminated string at byte \(offset)") }
            defer { offset = end + 1 }
            return String(decoding: bytes[offset..<end], as: UTF8.self)
        }

        mutating func expect(_ tag: Character, in what: String) throws {
            let byte = try byte()
            guard byte == tag.asciiValue else { throw DecodeError("\(what): expected '\(tag)', got \(printable(byte))") }
        }

        mutating func tuple() throws -> [Value] {
            let count = Int(try int16())
            guard count >= 0 else { throw DecodeError("negative column count in TupleData") }
            var values: [Value] = []
            for _ in 0..<count {
                let kind = try byte()
                switch kind {
                case UInt8(ascii: "n"): values.append(.null)
                case UInt8(ascii: "u"): values.append(.unchangedToast)
                case UInt8(ascii: "t"):
                    let length = Int(try uint32())
                    values.append(.text(String(decoding: try bytes(length), as: UTF8.self)))
                case UInt8(ascii: "b"):
                    let length = Int(try uint32())
                    values.append(.binary(try bytes(length)))
                default: throw DecodeError("unknown column kind \(printable(kind)) in TupleData")
                }
            }
            return values
        }
    }
}

// MARK: transactions

extension PgOutput {
    /// One row change with its relation's column names.
    public struct Change: Sendable, Equatable {
        public enum Operation: String, Sendable { case insert, update, delete, truncate }
        public var operation: Operation
        public var relation: Relation
        /// The new row (insert, update) or the old row / key (delete).
        public var row: [(name: String, value: Value)]
        /// The replica-identity columns of the row, when derivable.
        public var key: [(name: String, value: Value)]
        /// Update with REPLICA IDENTITY FULL or a changed key: the old values sent.
        public var old: [(name: String, value: Value)]?

        public static func == (a: Change, b: Change) -> Bool {
            a.operation == b.operation && a.relation == b.relation && a.row.map(\.name) == b.row.map(\.name)
                && a.row.map(\.value) == b.row.map(\.value) && a.key.map(\.name) == b.key.map(\.name)
                && a.key.map(\.value) == b.key.map(\.value)
        }

        /// The row as a JSON object (see `PgOutput.json`).
        public var rowJSON: String { PgOutput.json(row, relation: relation) }
        /// The key as a JSON object, `{}` when not derivable.
        public var keyJSON: String { PgOutput.json(key, relation: relation) }
    }

    public struct Transaction: Sendable, Equatable {
        /// The commit record's LSN: what `ALTER SUBSCRIPTION ... SKIP (lsn = ...)` takes.
        public var finalLSN: LSN
        public var xid: UInt32
        /// Microseconds since 2000-01-01 (PostgreSQL epoch).
        public var commitTime: Int64
        /// The LSN after the commit record: what the subscriber's origin records once applied.
        public var endLSN: LSN?
        public var origin: String?
        public var changes: [Change] = []

        public init(finalLSN: LSN, xid: UInt32, commitTime: Int64) {
            self.finalLSN = finalLSN
            self.xid = xid
            self.commitTime = commitTime
        }
        public var isComplete: Bool { endLSN != nil }
    }

    /// Groups a stream of messages into transactions (Relation messages may
    /// come anywhere before the changes that use them).
    public struct Assembler: Sendable {
        public private(set) var relations: [UInt32: Relation] = [:]
        public private(set) var transactions: [Transaction] = []
        /// The transaction begun and not committed yet (input cut off).
        public private(set) var open: Transaction?

        public init() {}

        public mutating func feed(_ message: Message) throws {
            switch message {
            case .begin(let finalLSN, let time, let xid):
                guard open == nil else { throw DecodeError("Begin inside a transaction (xid \(open!.xid))") }
                open = Transaction(finalLSN: finalLSN, xid: xid, commitTime: time)
            case .commit(_, _, let endLSN, _):
                guard var transaction = open else { throw DecodeError("Commit outside a transaction") }
                transaction.endLSN = endLSN
                transactions.append(transaction)
                open = nil
            case .origin(_, let name):
                open?.origin = name
            case .relation(let relation):
                relations[relation.oid] = relation
            case .type, .logicalMessage:
                break
            case .insert(let oid, let new):
                let relation = try self.relation(oid)
                let row = Self.named(new, relation)
                try append(Change(operation: .insert, relation: relation, row: row, key: Self.key(row, relation)))
            case .update(let oid, let oldKind, let old, let new):
                let relation = try self.relation(oid)
                let row = Self.named(new, relation)
                let oldRow = old.map { Self.named($0, relation) }
                // The key sent in 'K'/'O' is the old key (it changed); otherwise it is in the new row.
                let key = oldRow.map { Self.key($0, relation) } ?? Self.key(row, relation)
                _ = oldKind
                try append(Change(operation: .update, relation: relation, row: row, key: key, old: oldRow))
            case .delete(let oid, _, let old):
                let relation = try self.relation(oid)
                let row = Self.named(old, relation)
                try append(Change(operation: .delete, relation: relation, row: row, key: Self.key(row, relation)))
            case .truncate(_, let oids):
                for oid in oids {
                    try append(Change(operation: .truncate, relation: try relation(oid), row: [], key: []))
                }
            }
        }

        private mutating func append(_ change: Change) throws {
            guard open != nil else { throw DecodeError("\(change.operation.rawValue) outside a transaction") }
            open!.changes.append(change)
        }

        private func relation(_ oid: UInt32) throws -> Relation {
            guard let relation = relations[oid] else { throw DecodeError("change for relation \(oid) before its Relation message") }
            return relation
        }

        static func named(_ values: [Value], _ relation: Relation) -> [(name: String, value: Value)] {
            values.enumerated().map { index, value in
                (index < relation.columns.count ? relation.columns[index].name : "column\(index + 1)", value)
            }
        }

        /// Key columns with a value sent (a 'K' tuple sends NULL for the others).
        static func key(_ row: [(name: String, value: Value)], _ relation: Relation) -> [(name: String, value: Value)] {
            row.enumerated().filter { index, column in
                index < relation.columns.count && relation.columns[index].isKey && column.value != .null
            }.map(\.element)
        }
    }

    /// Decodes every message and groups them into transactions.
    public static func transactions(_ messages: [[UInt8]]) throws -> (complete: [Transaction], open: Transaction?) {
        var assembler = Assembler()
        for message in messages { try assembler.feed(try decode(message)) }
        return (assembler.transactions, assembler.open)
    }

    /// The first transaction the subscriber has not applied yet: the origin
    /// records the end LSN of the last transaction applied, so every
    /// transaction ending at or before `appliedUpTo` is done.
    public static func firstPending(_ transactions: [Transaction], appliedUpTo: LSN?) -> Transaction? {
        transactions.first { transaction in
            guard let applied = appliedUpTo, let end = transaction.endLSN else { return true }
            return end > applied
        }
    }

    /// Row values as a JSON object text. Values are text as PostgreSQL prints
    /// them; numbers, booleans and json/jsonb columns (by type OID) keep their
    /// JSON type, everything else is a string. Unchanged TOAST values are
    /// left out (their value is not in the stream).
    public static func json(_ row: [(name: String, value: Value)], relation: Relation) -> String {
        let types = Dictionary(relation.columns.map { ($0.name, $0.typeOID) }, uniquingKeysWith: { a, _ in a })
        var parts: [String] = []
        for (name, value) in row {
            let rendered: String
            switch value {
            case .unchangedToast: continue
            case .null: rendered = "null"
            case .binary(let bytes): rendered = quote("\\x" + bytes.map { String(format2: $0) }.joined())
            case .text(let text):
                switch types[name] ?? 0 {
                case 20, 21, 23, 26, 700, 701, 1700:  // int8, int2, int4, oid, float4, float8, numeric
                    rendered = isJSONNumber(text) ? text : quote(text)
                case 16: rendered = text == "t" ? "true" : text == "f" ? "false" : quote(text)
                case 114, 3802: rendered = text  // json, jsonb: already JSON
                default: rendered = quote(text)
                }
            }
            parts.append(quote(name) + ": " + rendered)
        }
        return "{" + parts.joined(separator: ", ") + "}"
    }

    static func isJSONNumber(_ text: String) -> Bool {
        // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        var chars = Array(text.utf8)[...]
        func digits() -> Int { var n = 0; while let c = chars.first, (48...57).contains(c) { chars.removeFirst(); n += 1 }; return n }
        if chars.first == UInt8(ascii: "-") { chars.removeFirst() }
        if chars.first == UInt8(ascii: "0") { chars.removeFirst() } else if digits() == 0 { return false }
        if chars.first == UInt8(ascii: ".") { chars.removeFirst(); if digits() == 0 { return false } }
        if chars.first == UInt8(ascii: "e") || chars.first == UInt8(ascii: "E") {
            chars.removeFirst()
            if chars.first == UInt8(ascii: "+") || chars.first == UInt8(ascii: "-") { chars.removeFirst() }
            if digits() == 0 { return false }
        }
        return chars.isEmpty
    }

    static func quote(_ text: String) -> String { jsonQuoted(text) }
}

extension String {
    /// Two lower-case hex digits.
    init(format2 byte: UInt8) {
        let hex = String(byte, radix: 16)
        self = hex.count == 1 ? "0" + hex : hex
    }
}

/// `text` as a JSON string literal (RFC 8259 escapes); shared by every JSON
/// text mmlite writes.
public func jsonQuoted(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + "\""
}
