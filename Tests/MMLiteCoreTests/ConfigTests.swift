import MMLiteCore
import Testing

let validConfig = """
[mesh]
name = "shop"
tables = ["public.users", "public.departments"]   # schema.* allowed

[[nodes]]
name = "n1"
dsn = "host=127.0.0.1 port=5432 dbname=shop user=postgres"   # how mmlite connects
peer_dsn = "host=10.0.0.1 dbname=shop user=replicator"        # optional

[[nodes]]
name = "n2"
dsn = "postgresql://postgres@127.0.0.1:5433/shop"
"""

func parseError(_ text: String) -> ConfigError? {
    do {
        _ = try MeshConfig.parse(text, file: "test.toml")
        return nil
    } catch let error as ConfigError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

@Suite("Configuration file")
struct ConfigTests {
    @Test("the issue's example parses")
    func example() throws {
        let config = try MeshConfig.parse(validConfig)
        #expect(config.mesh.name == "shop")
        #expect(config.mesh.tables == [.table(QualifiedName(schema: "public", name: "users")),
                                       .table(QualifiedName(schema: "public", name: "departments"))])
        #expect(config.mesh.filter == .auto)
        #expect(config.nodes.map(\.name) == ["n1", "n2"])
        #expect(config.nodes[0].effectivePeerDSN == "host=10.0.0.1 dbname=shop user=replicator")
        #expect(config.nodes[1].peerDSN == nil)
        #expect(config.nodes[1].effectivePeerDSN == config.nodes[1].dsn)
    }

    @Test("filter, wildcards and per-table settings")
    func options() throws {
        let config = try MeshConfig.parse("""
        [mesh]
        name = "m_1"
        tables = ["sales.*", "\\"Odd\\".\\"Name\\"", "Public.Users"]
        filter = "origin-none"

        [[nodes]]
        name = "a"
        dsn = "host=a dbname=x"
        [[nodes]]
        name = "b"
        dsn = "host=b dbname=x"

        [tables."public.users"]
        conflicts = "last-update-wins"
        """)
        #expect(config.mesh.filter == .originNone)
        #expect(config.mesh.tables == [.allTables(schema: "sales"), .table(QualifiedName(schema: "Odd", name: "Name")),
                                       .table(QualifiedName(schema: "public", name: "users"))])
        #expect(config.tableSettings[QualifiedName(schema: "public", name: "users")]?.conflicts == .lastUpdateWins)
    }

    @Test("a node listed twice names the line and field")
    func duplicateNode() {
        let error = parseError(validConfig + """

        [[nodes]]
        name = "n1"
        dsn = "host=127.0.0.1 port=5434 dbname=shop"
        """)
        #expect(error?.line == 14)
        #expect(error?.field == "nodes[3].name")
        #expect(error?.message.contains("listed twice") == true)
        #expect(error?.description.hasPrefix("test.toml:14: nodes[3].name:") == true)
    }

    @Test("the same DSN twice is a node listed twice")
    func duplicateDSN() {
        let error = parseError(validConfig + """

        [[nodes]]
        name = "n3"
        dsn = "port=5432  host=127.0.0.1 dbname=shop user=other"
        """)
        #expect(error?.field == "nodes[3].dsn")
        #expect(error?.line == 15)
        #expect(error?.message.contains("same dsn as nodes[1]") == true)
    }

    @Test("invalid node names", arguments: ["N1", "n-1", "", "nöde"])
    func badNodeName(_ name: String) {
        let error = parseError(validConfig.replacingOccurrences(of: "name = \"n2\"", with: "name = \"\(name)\""))
        #expect(error?.field == "nodes[2].name")
        #expect(error?.line == 11)
    }

    @Test("a DSN that is not a DSN, without leaking its password")
    func badDSN() {
        let error = parseError(validConfig.replacingOccurrences(of: "postgresql://postgres@127.0.0.1:5433/shop",
                                                                with: "host=x password='s3cret"))
        #expect(error?.field == "nodes[2].dsn")
        #expect(error?.line == 12)
        #expect(error?.message.contains("not a valid connection string") == true)
        #expect(error?.description.contains("s3cret") == false)

        let words = parseError(validConfig.replacingOccurrences(of: "postgresql://postgres@127.0.0.1:5433/shop", with: "just some words"))
        #expect(words?.field == "nodes[2].dsn")
    }

    @Test("table names are checked")
    func badTables() {
        let error = parseError(validConfig.replacingOccurrences(of: "\"public.departments\"", with: "\"departments\""))
        #expect(error?.field == "mesh.tables")
        #expect(error?.line == 3)
        #expect(error?.message.contains("schema is missing") == true)
        #expect(parseError(validConfig.replacingOccurrences(of: "\"public.departments\"", with: "\"public.users\""))?.message.contains("twice") == true)
        #expect(parseError(validConfig.replacingOccurrences(of: "\"public.departments\"", with: "\"a.b.c\""))?.field == "mesh.tables")
        #expect(parseError(validConfig.replacingOccurrences(of: "\"public.departments\"", with: "\"*.x\""))?.field == "mesh.tables")
    }

    @Test("multi-line tables array points at the bad entry's line")
    func multilineTables() {
        let error = parseError("""
        [mesh]
        name = "shop"
        tables = [
          "public.users",
          "bad name",
        ]
        [[nodes]]
        name = "n1"
        dsn = "host=a"
        """)
        #expect(error?.line == 5)
    }

    @Test("missing and unknown fields")
    func missingFields() throws {
        #expect(parseError("[[nodes]]\nname = \"a\"\ndsn = \"host=a\"")?.message.contains("[mesh]") == true)
        let noTables = parseError("[mesh]\nname = \"x\"\n[[nodes]]\nname = \"a\"\ndsn = \"host=a\"")
        #expect(noTables?.message.contains("mesh.tables is missing") == true)
        #expect(noTables?.line == 1)
        let typo = parseError(validConfig.replacingOccurrences(of: "peer_dsn =", with: "peer-dsn ="))
        #expect(typo?.field == "nodes[1].peer-dsn")
        #expect(typo?.line == 8)
        let noDSN = parseError("[mesh]\nname = \"x\"\ntables = [\"a.b\"]\n[[nodes]]\nname = \"a\"\n")
        #expect(noDSN?.field == "nodes[1]")
        #expect(noDSN?.line == 4)
        #expect(parseError(validConfig.replacingOccurrences(of: "name = \"shop\"", with: "name = \"shop\"\nfilter = \"none\""))?.field == "mesh.filter")
        #expect(parseError(validConfig + "\n[tables.\"public.users\"]\nconflicts = \"newest\"")?.field == "tables.\"public.users\".conflicts")
        #expect(parseError(validConfig + "\n[tables.\"public.other\"]\nconflicts = \"error\"")?.message.contains("not in mesh.tables") == true)
        // delta_columns: an array of names, only with last-update-wins.
        #expect(parseError(validConfig + "\n[tables.\"public.users\"]\nconflicts = \"keep-local\"\ndelta_columns = [\"n\"]")?.message.contains("needs conflicts = \"last-update-wins\"") == true)
        #expect(parseError(validConfig + "\n[tables.\"public.users\"]\ndelta_columns = [\"n\"]")?.field == "tables.\"public.users\".delta_columns")
        #expect(parseError(validConfig + "\n[tables.\"public.users\"]\nconflicts = \"last-update-wins\"\ndelta_columns = \"n\"")?.message.contains("array of column names") == true)
        #expect(parseError(validConfig + "\n[tables.\"public.users\"]\nconflicts = \"last-update-wins\"\ndelta_columns = [\"n\", \"n\"]")?.message.contains("twice") == true)
        let deltas = try MeshConfig.parse(validConfig + "\n[tables.\"public.users\"]\nconflicts = \"last-update-wins\"\ndelta_columns = [\"n\", \"m\"]")
        #expect(deltas.tableSettings[QualifiedName(schema: "public", name: "users")]?.deltaColumns == ["n", "m"])
    }

    @Test("TOML syntax errors carry the line")
    func syntax() {
        let error = parseError("[mesh]\nname = \"shop\"\ntables = [\"a.b\"\n\n[[nodes]]")
        #expect(error?.line != nil)
        #expect(error?.message.hasPrefix("not valid TOML") == true)
    }

    @Test("names must fit PostgreSQL's 63-byte limit")
    func longNames() {
        let mesh = String(repeating: "m", count: 40)
        let node = String(repeating: "n", count: 20)
        let error = parseError(validConfig.replacingOccurrences(of: "name = \"shop\"", with: "name = \"\(mesh)\"")
            .replacingOccurrences(of: "name = \"n2\"", with: "name = \"\(node)\""))
        #expect(error?.field == "nodes[1].name" || error?.field == "nodes[2].name")
        #expect(error?.message.contains("63-byte") == true)
    }

    @Test("an extra DSN validator (libpq's) is consulted")
    func validator() {
        do {
            _ = try MeshConfig.parse(validConfig, validateDSN: { $0.hasPrefix("postgresql") ? "invalid URI" : nil })
            Issue.record("expected an error")
        } catch let error as ConfigError {
            #expect(error.field == "nodes[2].dsn")
            #expect(error.message.contains("invalid URI"))
        } catch { Issue.record("\(error)") }
    }
}
