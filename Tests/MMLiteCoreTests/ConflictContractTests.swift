import Foundation
import MMLiteCore
import Testing

/// The C side of ConflictContract: the #defines of
/// plugin/Sources/CMMLite/include/mmlite_contract.h, read as text.
struct ContractHeader {
    static let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("plugin/Sources/CMMLite/include/mmlite_contract.h")

    var defines: [String: String] = [:]

    init() throws {
        let text = try String(contentsOf: Self.path, encoding: .utf8).replacingOccurrences(of: "\\\n", with: " ")
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            guard words.count == 3, words[0] == "#define" else { continue }
            defines[String(words[1])] = words[2].trimmingCharacters(in: .whitespaces)
        }
    }

    /// The string literals of a define: `{"a", "b"}` or `"a"`.
    func strings(_ name: String) -> [String]? {
        guard let value = defines[name] else { return nil }
        return value.split(separator: "\"", omittingEmptySubsequences: false).enumerated()
            .filter { $0.offset % 2 == 1 }.map { String($0.element) }
    }

    func integer(_ name: String) -> Int? { defines[name].flatMap { Int($0) } }
}

@Suite("conflict tables: the contract between mmlite.so and the generated SQL")
struct ConflictContractTests {
    @Test("the change table columns the native trigger reads are ConflictContract's, in order")
    func changeColumns() throws {
        let header = try ContractHeader()
        let expected = ConflictContract.changeColumns.filter { !ConflictContract.changeColumnsNotReadNatively.contains($0) }
        #expect(header.strings("MMLITE_CHANGE_COLUMNS") == expected, "mmlite_contract.h and ConflictContract.changeColumns differ")
    }

    @Test("the version table columns are ConflictContract's, in order")
    func versionColumns() throws {
        let header = try ContractHeader()
        #expect(header.strings("MMLITE_VERSION_COLUMNS") == ConflictContract.versionColumns,
                "mmlite_contract.h and ConflictContract.versionColumns differ")
    }

    @Test("the schema and name suffixes of change and version tables, which the plugin pairs by name, are ConflictContract's and the generated names'")
    func tableNames() throws {
        let header = try ContractHeader()
        #expect(header.strings("MMLITE_SCHEMA")?.first == ConflictContract.schema)
        #expect(header.strings("MMLITE_CHANGES_SUFFIX")?.first == ConflictContract.changesSuffix)
        #expect(header.strings("MMLITE_VERSIONS_SUFFIX")?.first == ConflictContract.versionsSuffix)
        let table = QualifiedName(schema: "public", name: "t")
        #expect(ConflictSQL.changeTable(table) == QualifiedName(schema: "mmlite", name: "public.t$changes"))
        #expect(ConflictSQL.versionTable(table) == QualifiedName(schema: "mmlite", name: "public.t$versions"))
    }

    @Test("op names and codes, trigger arguments")
    func opsAndArguments() throws {
        let header = try ContractHeader()
        let names = ["INSERT", "UPDATE", "DELETE"].map { header.strings("MMLITE_OP_\($0)_NAME")?.first }
        #expect(names == ConflictContract.opNames, "mmlite_contract.h and ConflictContract.opNames differ")
        let codes = ["INSERT", "UPDATE", "DELETE"].compactMap { header.integer("MMLITE_OP_\($0)") }
        #expect(codes.count == 3 && Set(codes).count == 3 && !codes.contains(0), "op codes: distinct, 0 means unknown: \(codes)")
        let plans = ["SQL", "APPLY"].compactMap { header.integer("MMLITE_PLAN_\($0)") }
        #expect(plans.count == 2 && Set(plans).count == 2)
        #expect(header.integer("MMLITE_APPLY_ARGUMENTS") == ConflictContract.nativeApplyArgumentCount)
        #expect(header.integer("MMLITE_CAPTURE_ARGUMENTS") == ConflictContract.nativeCaptureFixedArgumentCount)
    }

    /// The first word of each line of the generated `CREATE TABLE IF NOT EXISTS <table> (` up to its PRIMARY KEY.
    func createdColumns(_ sql: String, _ table: QualifiedName) -> [String] {
        let lines = sql.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let start = lines.firstIndex(of: "CREATE TABLE IF NOT EXISTS \(table.sql) (") else { return [] }
        return lines[(start + 1)...].prefix { !$0.hasPrefix("PRIMARY KEY") }.compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    @Test("the generated SQL creates ConflictContract's columns, writes its op names and passes the native trigger its arguments")
    func generatedSQL() throws {
        let table = accountsTable()
        let sql = try ConflictSQL.install(table, node: "n1")
        let writable = table.columns.filter { !$0.generated }.map(\.name)
        #expect(createdColumns(sql, ConflictSQL.changeTable(accounts)) == ConflictContract.changeColumns + writable)
        #expect(createdColumns(sql, ConflictSQL.versionTable(accounts)) == table.keyColumns.map(\.name) + ConflictContract.versionColumns)
        for op in ConflictContract.opNames {
            #expect(sql.contains("'\(op)'"), "no '\(op)' in the generated SQL")
        }
        // The native triggers' arguments: apply's fixed count; capture's fixed ones, then the writable columns.
        let applyArguments = try #require(sql.range(of: "EXECUTE FUNCTION mmlite.apply_change(").map { String(sql[$0.upperBound...].prefix { $0 != "\n" }) })
        #expect(applyArguments.components(separatedBy: "'', ''").count == ConflictContract.nativeApplyArgumentCount, "\(applyArguments)")
        let captureArguments = try #require(sql.range(of: "EXECUTE FUNCTION mmlite.capture_change(").map { String(sql[$0.upperBound...].prefix { $0 != "\n" }) })
        let captureFixed = captureArguments.components(separatedBy: "'', ''").prefix(ConflictContract.nativeCaptureFixedArgumentCount)
        #expect(captureFixed.last == "n1", "\(captureArguments)")
        #expect(captureArguments.hasSuffix("''n1'', " + writable.map { "''\($0)''" }.joined(separator: ", ") + ")';"), "\(captureArguments)")
    }
}
