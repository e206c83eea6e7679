import ClusterHarness
import Dispatch
import Foundation
import PostgresClient
import Testing

/// The PostgreSQL installations every plugin test runs on: `MMLITE_PG_CONFIGS`
/// (pg_config paths, ':' or ',' separated; `.ci/run` passes every build of
/// scripts/pg-builds), else Debian's PostgreSQL 15.
let installations: [PGInstallation] = {
    do { return try PGInstallation.fromEnvironment() }
    catch {
        print("mmlite tests: no PostgreSQL installation: \(error)")
        return []
    }
}()

/// Tables of the original mmlite README, plus:
/// - `applied_log`: an ALWAYS trigger records every row the apply worker writes
///   (session_replication_role = replica), so a test can check that a node
///   received exactly the changes its peers made — an echo adds rows here;
/// - `marks`: rows used as barriers (see `barrier`).
let schemaSQL = """
CREATE TABLE public.departments (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.users (id bigint PRIMARY KEY, name text NOT NULL, department_id int, version int NOT NULL DEFAULT 0);
CREATE TABLE public.events (id bigint PRIMARY KEY, payload text);
CREATE TABLE public.marks (id text PRIMARY KEY);
CREATE TABLE public.applied_log (seq bigserial PRIMARY KEY, tbl text NOT NULL, op text NOT NULL, id bigint NOT NULL);
CREATE FUNCTION public.log_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('session_replication_role') = 'replica' THEN
    INSERT INTO public.applied_log(tbl, op, id)
    VALUES (TG_TABLE_NAME, TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER log_applied AFTER INSERT OR UPDATE OR DELETE ON public.users
  FOR EACH ROW EXECUTE FUNCTION public.log_applied();
ALTER TABLE public.users ENABLE ALWAYS TRIGGER log_applied;
CREATE TRIGGER log_applied AFTER INSERT OR UPDATE OR DELETE ON public.departments
  FOR EACH ROW EXECUTE FUNCTION public.log_applied();
ALTER TABLE public.departments ENABLE ALWAYS TRIGGER log_applied;
"""

let replicatedTables = ["public.users", "public.departments", "public.events"]

/// Starts `count` clusters, runs `body`, and always removes them. On failure
/// the tail of every server log is attached to the test output.
func withClusters(_ count: Int, _ installation: PGInstallation, settings: [String: String] = [:],
                  schema: Bool = true, _ body: ([Cluster]) throws -> Void) throws {
    try withClusters(Array(repeating: installation, count: count), settings: settings, schema: schema, body)
}

/// One cluster per installation (mixed majors), named n1, n2, ...
func withClusters(_ installations: [PGInstallation], settings: [String: String] = [:],
                  schema: Bool = true, _ body: ([Cluster]) throws -> Void) throws {
    let harness = try ClusterHarness()
    defer { harness.destroyAll() }
    let clusters = try installations.enumerated().map {
        try harness.startCluster(name: "n\($0.offset + 1)", installation: $0.element, settings: settings)
    }
    if schema { for cluster in clusters { try cluster.execute(schemaSQL) } }
    do {
        try body(clusters)
    } catch {
        for cluster in clusters {
            print("---- \(cluster) log tail ----\n" + cluster.serverLog().split(separator: "\n").suffix(30).joined(separator: "\n"))
        }
        throw error
    }
}

/// The original mmlite README, as written there, for nodes `publisher`(node1)
/// and `subscriber`(node2): each publishes the tables and creates a slot for the
/// other; node2 subscribes with copy_data = true, then node1 without copy.
///
/// `reverseSlotAfterCopy` is mmlite's safe order for PostgreSQL 13, whose
/// table-sync worker writes copied rows without a replication origin: node2's
/// slot for node1 is created only once the copy has finished, so the copied
/// rows lie before the slot's start and are never sent back.
func originalProcedure(node1: Cluster, node2: Cluster, plugin: String = "mmlite",
                       subscriptionOptions: String = "", reverseSlotAfterCopy: Bool = false) throws {
    let tables = "users, departments, events, marks"
    try node1.execute("CREATE PUBLICATION node1 FOR TABLE \(tables)")
    try node1.execute("SELECT pg_create_logical_replication_slot('node2', '\(plugin)')")
    try node2.execute("CREATE PUBLICATION node2 FOR TABLE \(tables)")
    if !reverseSlotAfterCopy {
        try node2.execute("SELECT pg_create_logical_replication_slot('node1', '\(plugin)')")
    }
    try node2.execute("""
        CREATE SUBSCRIPTION from_node1 CONNECTION '\(node1.conninfo)' PUBLICATION node1
        WITH (copy_data = true, create_slot = false, slot_name = 'node2'\(subscriptionOptions))
        """)
    try waitForTableSync(node2)
    if reverseSlotAfterCopy {
        try node2.execute("SELECT pg_create_logical_replication_slot('node1', '\(plugin)')")
    }
    try node1.execute("""
        CREATE SUBSCRIPTION from_node2 CONNECTION '\(node2.conninfo)' PUBLICATION node2
        WITH (copy_data = false, create_slot = false, slot_name = 'node1'\(subscriptionOptions))
        """)
}

/// How one directed link filters replicated changes: a slot with the mmlite
/// plugin, or (publisher and subscriber both 16+) a pgoutput slot and a
/// subscription with `origin = none`.
enum LinkFilter {
    case mmlite, originNone, none

    /// mmlite's rule: origin = none where both ends support it, else mmlite.
    static func auto(publisher: Cluster, subscriber: Cluster) -> LinkFilter {
        publisher.installation.major >= 16 && subscriber.installation.major >= 16 ? .originNone : .mmlite
    }
}

/// A full mesh the same way: on every node a publication `node<i>` and a slot
/// `node<j>` per peer j; on j a subscription `from_node<i>` using it, no copy.
func fullMesh(_ nodes: [Cluster], plugin: String = "mmlite") throws {
    try fullMesh(nodes) { _, _ in plugin == "mmlite" ? .mmlite : .none }
}

func fullMesh(_ nodes: [Cluster], filter: (Cluster, Cluster) -> LinkFilter) throws {
    for (i, node) in nodes.enumerated() {
        try node.execute("CREATE PUBLICATION node\(i + 1) FOR TABLE users, departments, events, marks")
        for (j, peer) in nodes.enumerated() where j != i {
            let plugin = filter(node, peer) == .mmlite ? "mmlite" : "pgoutput"
            try node.execute("SELECT pg_create_logical_replication_slot('node\(j + 1)', '\(plugin)')")
        }
    }
    for (i, publisher) in nodes.enumerated() {
        for (j, subscriber) in nodes.enumerated() where j != i {
            let origin = filter(publisher, subscriber) == .originNone ? ", origin = none" : ""
            try subscriber.execute("""
                CREATE SUBSCRIPTION from_node\(i + 1) CONNECTION '\(publisher.conninfo)' PUBLICATION node\(i + 1)
                WITH (copy_data = false, create_slot = false, slot_name = 'node\(j + 1)'\(origin))
                """)
        }
    }
}

/// Waits until every table of every subscription on `node` is synchronised.
func waitForTableSync(_ node: Cluster, timeout: Double = 60) throws {
    let done = waitUntil(timeout: timeout) {
        try node.scalar("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'") == "0"
    }
    try #require(done, "table sync on \(node) did not finish in \(timeout)s")
}

/// After `barrier(nodes)`, every change committed on any node before the call
/// has been applied on every other node — and so has any echo of it: a mark
/// written on A after A applied a change reaches B only after whatever A's
/// slot for B sends about that change.
func barrier(_ nodes: [Cluster], timeout: Double = 90) throws {
    let round = UUID().uuidString
    for (i, source) in nodes.enumerated() {
        try source.execute("INSERT INTO public.marks VALUES ('\(round)-\(i)')")
    }
    for (i, source) in nodes.enumerated() {
        for target in nodes where target !== source {
            let arrived = waitUntil(timeout: timeout) {
                try target.scalar("SELECT count(*) FROM public.marks WHERE id = '\(round)-\(i)'") == "1"
            }
            try #require(arrived, "mark from \(source) did not reach \(target) in \(timeout)s")
        }
    }
}

/// Expects every node to hold identical content in every replicated table.
func expectIdentical(_ nodes: [Cluster], tables: [String] = replicatedTables,
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
    for table in tables {
        let prints = try nodes.map { try $0.fingerprint(of: table) }
        #expect(Set(prints).count == 1, "\(table) differs: \(zip(nodes.map(\.name), prints).map { "\($0)=\($1)" })",
                sourceLocation: sourceLocation)
    }
}

/// The (table, op, id) changes the apply worker wrote on `node`, sorted.
func appliedChanges(on node: Cluster) throws -> [String] {
    try node.execute("SELECT tbl || ' ' || op || ' ' || id FROM public.applied_log ORDER BY 1").rows.map { $0[0] ?? "" }
}

/// ERROR/FATAL/PANIC lines and crashes in the logs of `nodes`.
func expectCleanLogs(_ nodes: [Cluster], ignoring expected: String? = nil,
                     sourceLocation: SourceLocation = #_sourceLocation) {
    for node in nodes {
        let errors = node.logErrors().filter { line in expected.map { !line.contains($0) } ?? true }
        #expect(errors.isEmpty, "\(node) logged errors:\n\(errors.prefix(10).joined(separator: "\n"))",
                sourceLocation: sourceLocation)
    }
}

/// Runs `work` for each index at the same time, each on its own thread (not
/// DispatchQueue.concurrentPerform: that runs at most one per core, and on a
/// 2-core machine a third worker would wait for the first two to finish), and
/// waits for all of them. Rethrows the first error.
func concurrently(_ count: Int, _ work: @escaping (Int) throws -> Void) throws {
    let lock = NSLock()
    var failures: [Error] = []
    let finished = DispatchSemaphore(value: 0)
    for index in 0..<count {
        let thread = Thread {
            do { try work(index) } catch {
                lock.lock(); failures.append(error); lock.unlock()
            }
            finished.signal()
        }
        thread.stackSize = 4 << 20
        thread.start()
    }
    for _ in 0..<count { finished.wait() }
    if let first = failures.first { throw first }
}

/// A record of the row changes a writer made locally on one node, in the form
/// `appliedChanges(on:)` reports them on the nodes that receive them.
struct ChangeLog {
    var entries: [String] = []
    mutating func insert(_ table: String, _ id: Int) { entries.append("\(table) INSERT \(id)") }
    mutating func update(_ table: String, _ id: Int) { entries.append("\(table) UPDATE \(id)") }
    mutating func delete(_ table: String, _ id: Int) { entries.append("\(table) DELETE \(id)") }
    var sorted: [String] { entries.sorted() }
}

func label(_ installation: PGInstallation, _ test: String) -> String { "[PostgreSQL \(installation.version)] \(test)" }
