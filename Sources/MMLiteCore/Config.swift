import TOMLKit

/// The mesh as described by the configuration file (`mmlite.toml`).
public struct MeshConfig: Sendable, Equatable {
    public var mesh: MeshSettings
    public var nodes: [NodeConfig]
    /// Per-table settings (`[tables."schema.table"]`), keyed by table.
    public var tableSettings: [QualifiedName: TableSettings]

    public init(mesh: MeshSettings, nodes: [NodeConfig], tableSettings: [QualifiedName: TableSettings] = [:]) {
        self.mesh = mesh
        self.nodes = nodes
        self.tableSettings = tableSettings
    }

    public func node(named name: String) -> NodeConfig? { nodes.first { $0.name == name } }

    /// Every password found in any DSN of the file, for redacting output.
    public var secrets: [String] {
        nodes.flatMap { DSN.passwords(in: $0.dsn) + ($0.peerDSN.map(DSN.passwords(in:)) ?? []) }
    }

    public var names: ObjectNames { ObjectNames(mesh: mesh.name) }
}

public struct MeshSettings: Sendable, Equatable {
    public var name: String
    public var tables: [TablePattern]
    public var filter: FilterMode
    /// How long `mmlite conflicts prune` keeps conflict-log rows (a PostgreSQL interval).
    public var conflictLogRetention: String
    /// How long `mmlite conflicts prune` keeps tombstones of opted-in tables.
    public var tombstoneRetention: String
    /// How arriving changes of opted-in tables are applied (docs/conflicts.md).
    public var conflictApply: ConflictApply
    /// How the sequences that feed mesh tables are kept apart (docs/sequences.md).
    public var sequences: SequenceMode
    /// `sequence_step`: the INCREMENT BY of converted sequences, and the number of node offsets there are.
    public var sequenceStep: Int

    public static let defaultConflictLogRetention = "30 days"
    public static let defaultTombstoneRetention = "7 days"
    public static let defaultSequenceStep = 64
    /// Offsets take 10 bits of a time-ordered ID (docs/sequences.md).
    public static let sequenceStepRange = 2...1024

    public init(name: String, tables: [TablePattern], filter: FilterMode = .auto,
                conflictLogRetention: String = MeshSettings.defaultConflictLogRetention,
                tombstoneRetention: String = MeshSettings.defaultTombstoneRetention,
                conflictApply: ConflictApply = .auto, sequences: SequenceMode = .nodeOffset,
                sequenceStep: Int = MeshSettings.defaultSequenceStep) {
        self.name = name
        self.tables = tables
        self.filter = filter
        self.conflictLogRetention = conflictLogRetention
        self.tombstoneRetention = tombstoneRetention
        self.conflictApply = conflictApply
        self.sequences = sequences
        self.sequenceStep = sequenceStep
    }
}

/// `[mesh] sequences`: whether `mmlite apply` gives each node's sequences their own values.
public enum SequenceMode: String, Sendable, Equatable, CaseIterable {
    /// Each node draws from its own residue class: INCREMENT BY sequence_step, starting at its offset.
    case nodeOffset = "node-offset"
    /// mmlite leaves sequences alone; doctor fails on a key fed by a sequence that collides.
    case none
}

/// `[mesh] conflict_apply`: which apply and capture triggers conflict handling installs.
public enum ConflictApply: String, Sendable, Equatable, CaseIterable {
    /// The native triggers of mmlite.so where the node's server has them, SQL elsewhere.
    case auto
    /// Only the generated plpgsql (for comparison, or a server where loading
    /// C functions is not wanted).
    case sql
}

public struct NodeConfig: Sendable, Equatable {
    public var name: String
    /// How mmlite connects to the node.
    public var dsn: String
    /// How the other nodes' subscriptions connect to this node (nil: `dsn`).
    public var peerDSN: String?

    public init(name: String, dsn: String, peerDSN: String? = nil) {
        self.name = name
        self.dsn = dsn
        self.peerDSN = peerDSN
    }

    /// The connection string stored in the other nodes' subscriptions.
    public var effectivePeerDSN: String { peerDSN ?? dsn }
}

/// How a link keeps changes from echoing back.
public enum FilterMode: String, Sendable, Equatable, CaseIterable {
    /// `origin-none` when publisher and subscriber are both PostgreSQL 16+, else `mmlite`.
    case auto
    /// Always a slot with the mmlite output plugin.
    case mmlite
    /// Always native `origin = none` (PostgreSQL 16+ on both ends).
    case originNone = "origin-none"
}

/// Per-table settings. A conflict policy opts the table in to conflict
/// handling, which `mmlite apply` installs (Conflict.swift, docs/conflicts.md).
public struct TableSettings: Sendable, Equatable {
    public var conflicts: ConflictPolicy?
    /// Columns whose updates travel as their change (new - old) and are added
    /// on every node, so concurrent increments all count (docs/conflicts.md,
    /// "Delta columns"); needs `conflicts = "last-update-wins"`.
    public var deltaColumns: [String]
    public init(conflicts: ConflictPolicy? = nil, deltaColumns: [String] = []) {
        self.conflicts = conflicts
        self.deltaColumns = deltaColumns
    }
}

public enum ConflictPolicy: String, Sendable, Equatable, CaseIterable {
    case lastUpdateWins = "last-update-wins"
    case keepLocal = "keep-local"
    case applyRemote = "apply-remote"
    case error
}

/// A problem in the configuration file, with where it is.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int?
    /// Dotted path of the field, e.g. `nodes[2].dsn` (nodes counted from 1).
    public var field: String?
    public var message: String

    public init(file: String, line: Int?, field: String?, message: String) {
        self.file = file
        self.line = line
        self.field = field
        self.message = message
    }

    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        text += ": "
        if let field { text += "\(field): " }
        return text + message
    }
}

extension MeshConfig {
    /// Node and mesh names: lower-case letters, digits and underscores.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    /// Parses and validates a configuration file's text. `file` names it in errors.
    /// `validateDSN` may add a stricter check of connection strings (libpq's
    /// own parser); it returns an error message or nil.
    public static func parse(_ text: String, file: String = "mmlite.toml",
                             validateDSN: ((String) -> String?)? = nil) throws -> MeshConfig {
        let source = SourceMap(text)
        func error(_ field: String?, _ message: String, value: String? = nil) -> ConfigError {
            ConfigError(file: file, line: field.flatMap { source.line(of: $0, containing: value) }, field: field, message: message)
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let parseError as TOMLParseError {
            throw ConfigError(file: file, line: parseError.source.begin.line, field: nil,
                              message: "not valid TOML: \(parseError.description)")
        }

        for key in root.keys where !["mesh", "nodes", "tables"].contains(key) {
            throw error(key, "unknown setting (expected [mesh], [[nodes]] and optionally [tables.\"schema.table\"])")
        }

        // [mesh]
        guard let meshValue = root["mesh"] else { throw error(nil, "the [mesh] section is missing") }
        guard let meshTable = meshValue.table else { throw error("mesh", "must be a table ([mesh])") }
        let meshKeys = ["name", "tables", "filter", "conflict_log_retention", "tombstone_retention", "conflict_apply", "sequences", "sequence_step"]
        for key in meshTable.keys where !meshKeys.contains(key) {
            throw error("mesh.\(key)", "unknown setting (known: \(meshKeys.joined(separator: ", ")))")
        }
        guard let nameValue = meshTable["name"] else { throw error("mesh", "mesh.name is missing") }
        guard let meshName = nameValue.string else { throw error("mesh.name", "must be a string") }
        guard isValidName(meshName) else {
            throw error("mesh.name", "\"\(meshName)\" is not a valid name: use lower-case letters, digits and _")
        }
        guard let tablesValue = meshTable["tables"] else {
            throw error("mesh", "mesh.tables is missing (e.g. tables = [\"public.users\", \"sales.*\"])")
        }
        guard let tablesArray = tablesValue.array else { throw error("mesh.tables", "must be an array of strings") }
        var patterns: [TablePattern] = []
        for (index, element) in tablesArray.enumerated() {
            guard let text = element.string else { throw error("mesh.tables", "entry \(index + 1) is not a string") }
            let pattern: TablePattern
            do { pattern = try TablePattern(parsing: text) } catch let patternError as TablePatternError {
                throw error("mesh.tables", patternError.message, value: text)
            }
            guard !patterns.contains(pattern) else {
                throw error("mesh.tables", "\(pattern) is listed twice", value: text)
            }
            patterns.append(pattern)
        }
        guard !patterns.isEmpty else { throw error("mesh.tables", "lists no table") }
        var filter = FilterMode.auto
        if let filterValue = meshTable["filter"] {
            guard let text = filterValue.string, let mode = FilterMode(rawValue: text) else {
                throw error("mesh.filter", "must be one of \"auto\", \"mmlite\", \"origin-none\"")
            }
            filter = mode
        }
        var conflictApply = ConflictApply.auto
        if let value = meshTable["conflict_apply"] {
            guard let text = value.string, let mode = ConflictApply(rawValue: text) else {
                throw error("mesh.conflict_apply", "must be one of " + ConflictApply.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))
            }
            conflictApply = mode
        }
        var sequences = SequenceMode.nodeOffset
        if let value = meshTable["sequences"] {
            guard let text = value.string, let mode = SequenceMode(rawValue: text) else {
                throw error("mesh.sequences", "must be one of " + SequenceMode.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))
            }
            sequences = mode
        }
        var sequenceStep = MeshSettings.defaultSequenceStep
        if let value = meshTable["sequence_step"] {
            let range = MeshSettings.sequenceStepRange
            guard let step = value.int, range.contains(step) else {
                throw error("mesh.sequence_step", "must be a whole number from \(range.lowerBound) to \(range.upperBound): the most nodes the mesh can ever have had (parted ones count), e.g. 64")
            }
            sequenceStep = step
        }
        var retention: [String: String] = [:]
        for (key, fallback) in [("conflict_log_retention", MeshSettings.defaultConflictLogRetention),
                                ("tombstone_retention", MeshSettings.defaultTombstoneRetention)] {
            guard let value = meshTable[key] else { retention[key] = fallback; continue }
            guard let text = value.string, let interval = RetentionInterval(text) else {
                throw error("mesh.\(key)", "must be a duration such as \"30 days\", \"12 hours\" or \"2 weeks\" (units: minutes, hours, days, weeks, months, years)")
            }
            retention[key] = interval.sql
        }

        // [[nodes]]
        guard let nodesValue = root["nodes"] else {
            throw error(nil, "no [[nodes]] entries: list every node with name and dsn")
        }
        guard let nodesArray = nodesValue.array else { throw error("nodes", "must be an array of tables ([[nodes]])") }
        var nodes: [NodeConfig] = []
        for (offset, element) in nodesArray.enumerated() {
            let index = offset + 1
            let path = "nodes[\(index)]"
            guard let table = element.table else { throw error(path, "must be a table ([[nodes]])") }
            for key in table.keys where !["name", "dsn", "peer_dsn"].contains(key) {
                throw error("\(path).\(key)", "unknown setting (known: name, dsn, peer_dsn)")
            }
            guard let nodeNameValue = table["name"] else { throw error(path, "name is missing") }
            guard let nodeName = nodeNameValue.string else { throw error("\(path).name", "must be a string") }
            guard isValidName(nodeName) else {
                throw error("\(path).name", "\"\(nodeName)\" is not a valid node name: use lower-case letters, digits and _")
            }
            if let first = nodes.firstIndex(where: { $0.name == nodeName }) {
                throw error("\(path).name", "node \"\(nodeName)\" is listed twice (also nodes[\(first + 1)])")
            }
            let names = ObjectNames(mesh: meshName)
            for objectName in [names.slot(subscriber: nodeName), names.subscription(publisher: nodeName)]
            where objectName.utf8.count > ObjectNames.maximumLength {
                throw error("\(path).name", "mesh and node names are too long: \"\(objectName)\" exceeds PostgreSQL's \(ObjectNames.maximumLength)-byte limit for names")
            }
            guard let dsnValue = table["dsn"] else { throw error(path, "dsn is missing (node \"\(nodeName)\")") }
            guard let dsn = dsnValue.string else { throw error("\(path).dsn", "must be a string") }
            if let problem = dsnProblem(dsn, validateDSN) {
                throw error("\(path).dsn", "not a valid connection string (\(problem)): \(DSN.masked(dsn))")
            }
            var peerDSN: String? = nil
            if let peerValue = table["peer_dsn"] {
                guard let text = peerValue.string else { throw error("\(path).peer_dsn", "must be a string") }
                if let problem = dsnProblem(text, validateDSN) {
                    throw error("\(path).peer_dsn", "not a valid connection string (\(problem)): \(DSN.masked(text))")
                }
                peerDSN = text
            }
            let node = NodeConfig(name: nodeName, dsn: dsn, peerDSN: peerDSN)
            if let first = nodes.firstIndex(where: { sameConnection($0.dsn, dsn) }) {
                throw error("\(path).dsn", "node \"\(nodeName)\" has the same dsn as nodes[\(first + 1)] (\"\(nodes[first].name)\"): a node listed twice?")
            }
            nodes.append(node)
        }
        guard !nodes.isEmpty else { throw error("nodes", "no [[nodes]] entries") }

        // [tables."schema.table"]
        var tableSettings: [QualifiedName: TableSettings] = [:]
        if let tablesSection = root["tables"] {
            guard let table = tablesSection.table else { throw error("tables", "must be a table of tables ([tables.\"schema.table\"])") }
            for key in table.keys {
                let path = "tables.\"\(key)\""
                guard case .table(let name)? = try? TablePattern(parsing: key) else {
                    throw error(path, "\"\(key)\" is not a table name (schema.table)")
                }
                guard patterns.contains(where: { $0.matches(name) }) else {
                    throw error(path, "\(name) is not in mesh.tables")
                }
                guard let settings = table[key]?.table else { throw error(path, "must be a table") }
                var result = TableSettings()
                for settingKey in settings.keys {
                    switch settingKey {
                    case "conflicts":
                        guard let text = settings[settingKey]?.string, let policy = ConflictPolicy(rawValue: text) else {
                            throw error("\(path).conflicts", "must be one of " + ConflictPolicy.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))
                        }
                        result.conflicts = policy
                    case "delta_columns":
                        guard let array = settings[settingKey]?.array else {
                            throw error("\(path).delta_columns", "must be an array of column names, e.g. [\"balance\"]")
                        }
                        let names = array.compactMap(\.string)
                        guard names.count == array.count, !names.isEmpty else {
                            throw error("\(path).delta_columns", "must be an array of column names, e.g. [\"balance\"]")
                        }
                        guard Set(names).count == names.count else { throw error("\(path).delta_columns", "names a column twice") }
                        result.deltaColumns = names
                    default:
                        throw error("\(path).\(settingKey)", "unknown setting (known: conflicts, delta_columns)")
                    }
                }
                if !result.deltaColumns.isEmpty, result.conflicts != .lastUpdateWins {
                    throw error("\(path).delta_columns", "needs conflicts = \"last-update-wins\" on the same table (the other columns keep last-update-wins)")
                }
                tableSettings[name] = result
            }
        }
        return MeshConfig(mesh: MeshSettings(name: meshName, tables: patterns, filter: filter,
                                             conflictLogRetention: retention["conflict_log_retention"]!,
                                             tombstoneRetention: retention["tombstone_retention"]!,
                                             conflictApply: conflictApply, sequences: sequences, sequenceStep: sequenceStep), nodes: nodes,
                          tableSettings: tableSettings)
    }

    static func dsnProblem(_ dsn: String, _ validate: ((String) -> String?)?) -> String? {
        if dsn.trimming(" \t\n") .isEmpty { return "empty" }
        do { _ = try DSN.parameters(dsn) } catch { return "\(error)" }
        if !DSN.isURI(dsn) && !dsn.contains("=") { return "no key=value pair" }
        return validate?(dsn)
    }

    /// Two DSNs reach the same server and database if they are the same
    /// string or set the same host, port and dbname (user and options aside).
    static func sameConnection(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        guard let pa = try? DSN.parameters(a), let pb = try? DSN.parameters(b) else { return false }
        func key(_ pairs: [(key: String, value: String)]) -> [String?] {
            func last(_ name: String) -> String? { pairs.last(where: { $0.key == name })?.value }
            return [last("host") ?? last("hostaddr"), last("port"), last("dbname"), last("service")]
        }
        let ka = key(pa)
        return ka.contains { $0 != nil } && ka == key(pb)
    }
}

/// Finds the line of a field in TOML text, by a light scan of table headers
/// and `key =` lines (TOMLKit does not report positions of values).
struct SourceMap {
    /// Dotted path ("mesh.name", "nodes[2].dsn", "tables.\"x\".conflicts") -> line (1-based).
    private(set) var lines: [String: Int] = [:]
    private let textLines: [Substring]

    init(_ text: String) {
        textLines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var section = ""
        var arrayCounts: [String: Int] = [:]
        for (offset, rawLine) in textLines.enumerated() {
            let lineNumber = offset + 1
            let line = rawLine.trimming(" \t\r")
            if line.hasPrefix("[[") , let end = line.range(of: "]]") {
                let name = Self.normalizeKey(String(line[line.index(line.startIndex, offsetBy: 2)..<end.lowerBound]))
                arrayCounts[name, default: 0] += 1
                section = "\(name)[\(arrayCounts[name]!)]"
                lines[section] = lines[section] ?? lineNumber
                lines[name] = lines[name] ?? lineNumber
            } else if line.hasPrefix("["), let end = line.lastIndex(of: "]") {
                section = Self.normalizeKey(String(line[line.index(after: line.startIndex)..<end]))
                lines[section] = lines[section] ?? lineNumber
            } else if let equals = line.firstIndex(of: "="), !line.hasPrefix("#") {
                let key = Self.normalizeKey(String(line[..<equals]))
                guard !key.isEmpty, !key.contains(" ") else { continue }
                let path = section.isEmpty ? key : section + "." + key
                lines[path] = lines[path] ?? lineNumber
            }
        }
    }

    static func normalizeKey(_ key: String) -> String {
        key.trimming(" \t").split(separator: ".").map { $0.trimming(" \t") }.joined(separator: ".")
    }

    /// The line of `path`, or of its closest enclosing section; when `value`
    /// is given, the first line at or after the field that contains it quoted.
    func line(of path: String, containing value: String? = nil) -> Int? {
        var candidate = path
        var found: Int? = lines[candidate]
        while found == nil, let dot = candidate.lastIndex(of: ".") {
            candidate = String(candidate[..<dot])
            found = lines[candidate]
        }
        if found == nil, let bracket = path.firstIndex(of: "[") { found = lines[String(path[..<bracket])] }
        guard let start = found else { return nil }
        if let value {
            for index in (start - 1)..<textLines.count where textLines[index].contains("\"\(value)\"") || textLines[index].contains("'\(value)'") {
                return index + 1
            }
        }
        return start
    }
}
