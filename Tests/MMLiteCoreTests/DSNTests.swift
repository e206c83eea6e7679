import MMLiteCore
import Testing

@Suite("DSN masking and parsing")
struct DSNTests {
    @Test("key=value passwords are masked, the rest kept", arguments: [
        ("host=a password=secret dbname=x", "host=a password=******** dbname=x"),
        ("host=a password = 'se cret' dbname=x", "host=a password = ******** dbname=x"),
        ("password='it\\'s' host=a", "password=******** host=a"),
        ("host=a dbname=x", "host=a dbname=x"),
        ("host=a password=", "host=a password=********"),
        ("dbname='host=b password=inner' user=u", "dbname='host=b password=********' user=u"),
    ])
    func keywordForm(_ input: String, _ expected: String) {
        #expect(DSN.masked(input) == expected)
    }

    @Test("URI passwords are masked", arguments: [
        ("postgresql://user:secret@host:5432/db", "postgresql://user:********@host:5432/db"),
        ("postgres://user:secret@host/db?sslmode=require&password=other", "postgres://user:********@host/db?sslmode=require&password=********"),
        ("postgresql://host/db?password=p%40ss", "postgresql://host/db?password=********"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql:///db?host=/tmp", "postgresql:///db?host=/tmp"),
    ])
    func uriForm(_ input: String, _ expected: String) {
        #expect(DSN.masked(input) == expected)
    }

    @Test("invalid strings still never show the password")
    func invalid() {
        let masked = DSN.masked("host=a password='unterminated secret")
        #expect(!masked.contains("secret"))
        #expect(!DSN.masked("host=a password secret").contains("secret"))
    }

    @Test("password detection and extraction")
    func passwords() {
        #expect(DSN.hasPassword("host=a password=x"))
        #expect(DSN.hasPassword("postgresql://u:x@h/db"))
        #expect(DSN.hasPassword("postgresql://h/db?password=x"))
        #expect(!DSN.hasPassword("host=a user=b"))
        #expect(!DSN.hasPassword("postgresql://u@h/db"))
        #expect(DSN.passwords(in: "postgresql://u:p%40ss@h/db").contains("p@ss"))
        #expect(DSN.redact("FATAL: bad p@ss here", secrets: ["p@ss"]) == "FATAL: bad ******** here")
    }

    @Test("parameters as libpq reads them")
    func parameters() throws {
        let pairs = try DSN.parameters("host=127.0.0.1 port=5432 dbname='my db' user=u")
        #expect(pairs.map(\.key) == ["host", "port", "dbname", "user"])
        #expect(pairs[2].value == "my db")
        let uri = try DSN.parameters("postgresql://u:pw@h1:5432,h2:5433/db?sslmode=disable")
        #expect(uri.first { $0.key == "host" }?.value == "h1,h2")
        #expect(uri.first { $0.key == "port" }?.value == "5432,5433")
        #expect(uri.first { $0.key == "dbname" }?.value == "db")
        #expect(uri.first { $0.key == "sslmode" }?.value == "disable")
        #expect(DSN.value("dbname", in: "host=a dbname=b") == "b")
        #expect(throws: DSNError.self) { try DSN.parameters("just words") }
        #expect(throws: DSNError.self) { try DSN.parameters("host='open") }
    }
}

@Suite("LSN arithmetic")
struct LSNTests {
    @Test("parse and print round trip", arguments: ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "0/1"])
    func roundTrip(_ text: String) throws {
        let lsn = try #require(LSN(text))
        #expect(lsn.description == text)
    }

    @Test("values")
    func values() throws {
        #expect(LSN("16/B374D848")?.value == 0x16_B374_D848)
        #expect(LSN("0/a")?.value == 10)
        #expect(LSN("0/a")?.description == "0/A")
        for bad in ["", "16", "16/", "/1", "G/1", "1/2/3", "123456789/0", "-1/0"] {
            #expect(LSN(bad) == nil, "\(bad)")
        }
    }

    @Test("differences in bytes")
    func differences() throws {
        let a = try #require(LSN("16/B374D848"))
        let b = try #require(LSN("16/B3000000"))
        #expect(a.bytes(since: b) == 0x74D848)
        #expect(b.bytes(since: a) == 0)
        #expect(a.difference(from: b) == 0x74D848)
        #expect(b.difference(from: a) == -0x74D848)
        #expect(try #require(LSN("1/0")).bytes(since: try #require(LSN("0/FFFFFFFF"))) == 1)
        #expect(a > b)
        #expect(b.advanced(by: 0x74D848) == a)
        #expect(LSN(UInt64.max).advanced(by: 1) == LSN(UInt64.max))
    }

    @Test("byte counts for people")
    func pretty() {
        #expect(formatBytes(0) == "0 B")
        #expect(formatBytes(1023) == "1023 B")
        #expect(formatBytes(1536) == "1.5 kB")
        #expect(formatBytes(16 * 1024 * 1024) == "16 MB")
    }
}

@Suite("Names and SQL quoting")
struct NamesTests {
    @Test("object names")
    func names() {
        let names = ObjectNames(mesh: "shop")
        #expect(names.publication == "mmlite_shop")
        #expect(names.slot(subscriber: "n2") == "mmlite_shop_n2")
        #expect(names.subscription(publisher: "n1") == "mmlite_shop_from_n1")
        #expect(names.subscriber(ofSlot: "mmlite_shop_n2") == "n2")
        #expect(names.subscriber(ofSlot: "other_n2") == nil)
        #expect(names.publisher(ofSubscription: "mmlite_shop_from_n1") == "n1")
    }

    @Test("quoting")
    func quoting() {
        #expect(SQL.identifier("users") == "users")
        #expect(SQL.identifier("Users") == "\"Users\"")
        #expect(SQL.identifier("user") == "\"user\"")
        #expect(SQL.identifier("a\"b") == "\"a\"\"b\"")
        #expect(SQL.literal("it's") == "'it''s'")
        #expect(SQL.literal("a\\b") == "E'a\\\\b'")
        #expect(QualifiedName(schema: "Sales", name: "orders").sql == "\"Sales\".orders")
    }
}
