import MMLiteCore
import Testing

/// Builds protocol messages byte by byte, as proto.c writes them.
struct MessageBuilder {
    var bytes: [UInt8] = []
    init(_ tag: Character) { bytes = [tag.asciiValue!] }
    mutating func byte(_ value: UInt8) { bytes.append(value) }
    mutating func char(_ value: Character) { bytes.append(value.asciiValue!) }
    mutating func int16(_ value: Int16) { let v = UInt16(bitPattern: value); bytes += [UInt8(v >> 8), UInt8(v & 0xff)] }
    mutating func int32(_ value: UInt32) { bytes += (0..<4).reversed().map { UInt8((value >> ($0 * 8)) & 0xff) } }
    mutating func int64(_ value: UInt64) { bytes += (0..<8).reversed().map { UInt8((value >> ($0 * 8)) & 0xff) } }
    mutating func string(_ value: String) { bytes += Array(value.utf8) + [0] }
    /// TupleData: nil = 'n', "\u{0}" = 'u', else 't' text.
    mutating func tuple(_ values: [String?]) {
        int16(Int16(values.count))
        for value in values {
            switch value {
            case nil: char("n")
            case "\u{0}"?: char("u")
            case let text?: char("t"); int32(UInt32(text.utf8.count)); bytes += Array(text.utf8)
            }
        }
    }
}

func begin(_ finalLSN: UInt64, xid: UInt32 = 700) -> [UInt8] {
    var m = MessageBuilder("B"); m.int64(finalLSN); m.int64(123_456); m.int32(xid); return m.bytes
}
func commit(_ commitLSN: UInt64, end: UInt64) -> [UInt8] {
    var m = MessageBuilder("C"); m.byte(0); m.int64(commitLSN); m.int64(end); m.int64(123_456); return m.bytes
}
/// people(id int4 key, email text, score numeric, active bool, doc jsonb)
func relation(_ oid: UInt32 = 16384) -> [UInt8] {
    var m = MessageBuilder("R"); m.int32(oid); m.string("public"); m.string("people"); m.char("d"); m.int16(5)
    for (flags, name, type) in [(UInt8(1), "id", UInt32(23)), (0, "email", 25), (0, "score", 1700), (0, "active", 16), (0, "doc", 3802)] {
        m.byte(flags); m.string(name); m.int32(type); m.int32(UInt32(bitPattern: -1))
    }
    return m.bytes
}

@Suite("pgoutput decoder")
struct PgOutputDecoderTests {
    @Test("Begin, Relation, Insert, Commit decode with LSNs, column names and values")
    func insert() throws {
        var insert = MessageBuilder("I"); insert.int32(16384); insert.char("N")
        insert.tuple(["7", "a@x.org", "1.50", "t", "{\"k\": [1]}"])
        let (done, open) = try PgOutput.transactions([begin(0x1_0000_0100), relation(), insert.bytes, commit(0x1_0000_0100, end: 0x1_0000_0130)])
        #expect(open == nil)
        #expect(done.count == 1)
        let transaction = try #require(done.first)
        #expect(transaction.finalLSN == LSN("1/100"))
        #expect(transaction.endLSN == LSN("1/130"))
        #expect(transaction.xid == 700)
        let change = try #require(transaction.changes.first)
        #expect(change.operation == .insert)
        #expect(change.relation.qualifiedName == "public.people")
        #expect(change.row.map(\.name) == ["id", "email", "score", "active", "doc"])
        #expect(change.keyJSON == "{\"id\": 7}")
        #expect(change.rowJSON == "{\"id\": 7, \"email\": \"a@x.org\", \"score\": 1.50, \"active\": true, \"doc\": {\"k\": [1]}}")
    }

    @Test("Update with an old key ('K'), Update without, Delete ('K' and 'O'), nulls and unchanged TOAST")
    func updateDelete() throws {
        var updateK = MessageBuilder("U"); updateK.int32(16384)
        updateK.char("K"); updateK.tuple(["7", nil, nil, nil, nil])
        updateK.char("N"); updateK.tuple(["8", "b\"q\\", nil, "f", "\u{0}"])
        var update = MessageBuilder("U"); update.int32(16384); update.char("N"); update.tuple(["8", "c", "NaN", nil, nil])
        var deleteO = MessageBuilder("D"); deleteO.int32(16384); deleteO.char("O"); deleteO.tuple(["8", "c", nil, nil, nil])
        var deleteK = MessageBuilder("D"); deleteK.int32(16384); deleteK.char("K"); deleteK.tuple(["9", nil, nil, nil, nil])
        let (done, _) = try PgOutput.transactions([begin(0x200), relation(), updateK.bytes, update.bytes, deleteO.bytes, deleteK.bytes, commit(0x200, end: 0x228)])
        let changes = try #require(done.first).changes
        #expect(changes.map(\.operation) == [.update, .update, .delete, .delete])
        #expect(changes[0].keyJSON == "{\"id\": 7}", "the old key: the key changed")
        #expect(changes[0].rowJSON == "{\"id\": 8, \"email\": \"b\\\"q\\\\\", \"score\": null, \"active\": false}", "unchanged TOAST left out")
        #expect(changes[1].keyJSON == "{\"id\": 8}")
        #expect(changes[1].rowJSON.contains("\"score\": \"NaN\""), "NaN is no JSON number")
        #expect(changes[2].keyJSON == "{\"id\": 8}")
        #expect(changes[3].keyJSON == "{\"id\": 9}")
    }

    @Test("origin, truncate, type and logical messages; an unterminated transaction stays open")
    func misc() throws {
        var origin = MessageBuilder("O"); origin.int64(0x99); origin.string("pg_16500")
        var type = MessageBuilder("Y"); type.int32(90000); type.string("public"); type.string("mood")
        var truncate = MessageBuilder("T"); truncate.int32(1); truncate.byte(1); truncate.int32(16384)
        var message = MessageBuilder("M"); message.byte(1); message.int64(0x300); message.string("p"); message.int32(2); message.bytes += [1, 2]
        var insert = MessageBuilder("I"); insert.int32(16384); insert.char("N"); insert.tuple(["1", "x", "2", "t", "null"])
        let (done, open) = try PgOutput.transactions([
            begin(0x300, xid: 1), origin.bytes, relation(), type.bytes, truncate.bytes, message.bytes, commit(0x300, end: 0x340),
            begin(0x400, xid: 2), relation(), insert.bytes,
        ])
        #expect(done.count == 1)
        #expect(done[0].origin == "pg_16500")
        #expect(done[0].changes.map(\.operation) == [.truncate])
        #expect(open?.xid == 2)
        #expect(open?.isComplete == false)
        #expect(open?.changes.count == 1)
    }

    @Test("the first transaction not applied yet, by the origin's progress")
    func pending() throws {
        let (done, _) = try PgOutput.transactions([begin(0x100, xid: 1), commit(0x100, end: 0x130),
                                                   begin(0x200, xid: 2), commit(0x200, end: 0x230),
                                                   begin(0x300, xid: 3), commit(0x300, end: 0x330)])
        #expect(PgOutput.firstPending(done, appliedUpTo: nil)?.xid == 1)
        #expect(PgOutput.firstPending(done, appliedUpTo: LSN(0x130))?.xid == 2)
        #expect(PgOutput.firstPending(done, appliedUpTo: LSN(0x250))?.xid == 3)
        #expect(PgOutput.firstPending(done, appliedUpTo: LSN(0x330)) == nil)
    }

    @Test("malformed input is an error, not a crash")
    func malformed() throws {
        #expect(throws: PgOutput.DecodeError.self) { try PgOutput.decode([]) }
        #expect(throws: PgOutput.DecodeError.self) { try PgOutput.decode([UInt8(ascii: "Z")]) }
        #expect(throws: PgOutput.DecodeError.self) { try PgOutput.decode(Array(begin(0x100).prefix(10))) }
        var insert = MessageBuilder("I"); insert.int32(1); insert.char("N"); insert.int16(1); insert.char("t"); insert.int32(100)
        #expect(throws: PgOutput.DecodeError.self) { try PgOutput.decode(insert.bytes) }
        var noName = MessageBuilder("R"); noName.int32(1); noName.bytes += Array("public".utf8)
        #expect(throws: PgOutput.DecodeError.self) { try PgOutput.decode(noName.bytes) }
        var unknown = MessageBuilder("I"); unknown.int32(5); unknown.char("N"); unknown.tuple(["1"])
        #expect(throws: PgOutput.DecodeError.self) { try PgOutput.transactions([begin(1), unknown.bytes]) }
        #expect(try PgOutput.bytes(fromHex: "\\x42ff00") == [0x42, 0xff, 0x00])
        #expect(throws: PgOutput.DecodeError.self) { try PgOutput.bytes(fromHex: "\\x4") }
    }
}
