import MMLiteCore
import Testing

@Suite("Link health")
struct HealthTests {
    func healthyLink() -> LinkStatus {
        var link = LinkStatus(publisher: "n1", subscriber: "n2", subscription: "mmlite_shop_from_n1", slot: "mmlite_shop_n2",
                              publisherReachable: true, subscriberReachable: true)
        link.subscriptionExists = true
        link.subscriptionEnabled = true
        link.workerPID = 42
        link.slotExists = true
        link.slotActive = true
        link.publisherLSN = LSN("0/3000000")
        link.confirmedFlushLSN = LSN("0/3000000")
        link.restartLSN = LSN("0/2000000")
        return link
    }

    @Test("a running, caught-up link is ok, with lag 0 bytes and 0 s")
    func ok() {
        let link = healthyLink()
        #expect(link.evaluate(Thresholds()).0 == .ok)
        #expect(link.lagBytes == 0)
        #expect(link.lagSeconds == 0)
        #expect(link.retainedBytes == 0x1000000)
    }

    @Test("lag thresholds")
    func lag() {
        var link = healthyLink()
        link.confirmedFlushLSN = LSN("0/1F00000")
        #expect(link.evaluate(Thresholds()).0 == .warning)
        #expect(link.evaluate(Thresholds(criticalBytes: 1 << 20)).0 == .critical)
        link.confirmedFlushLSN = LSN("0/3000000")
        link.replayLagSeconds = 90
        #expect(link.evaluate(Thresholds()).0 == .warning)
        #expect(link.evaluate(Thresholds()).1.map(\.message) == ["lag 90 s"])
    }

    @Test("broken links are critical and say why", arguments: [
        ("disabled", "is disabled"), ("no worker", "no apply worker"), ("no slot", "slot mmlite_shop_n2 is missing"),
        ("no subscription", "subscription mmlite_shop_from_n1 is missing"), ("down", "publisher n1 is unreachable"),
    ])
    func broken(_ case: String, _ expected: String) {
        var link = healthyLink()
        switch `case` {
        case "disabled": link.subscriptionEnabled = false; link.workerPID = nil
        case "no worker": link.workerPID = nil; link.applyErrorCount = 3
        case "no slot": link.slotExists = false
        case "no subscription": link.subscriptionExists = false
        default: link.publisherReachable = false
        }
        let (health, problems) = link.evaluate(Thresholds())
        #expect(health == .critical)
        #expect(problems.contains { $0.message.contains(expected) }, "\(problems)")
        #expect(health.nagiosCode == 2)
    }

    @Test("a stuck link replaces the missing-worker problem, by case")
    func stuck() {
        var link = healthyLink()
        link.workerPID = nil
        link.applyErrorCount = 4
        #expect(link.mayBeStuck)
        let plain = link.assess(Thresholds(), retainedWarningBytes: 1 << 30, stuck: nil)
        #expect(plain.messages == ["no apply worker runs for mmlite_shop_from_n1 (4 apply errors; see n2's server log)"])
        let stuck = StuckLink(publisher: "n1", subscriber: "n2", applyErrors: 4,
                              evidence: .pending(xid: 750, commitLSN: LSN("0/3000100")!, changes: "insert public.t key {} : {}"))
        let assessed = link.assess(Thresholds(), retainedWarningBytes: 1 << 30, stuck: stuck)
        #expect(assessed.health == .critical)
        #expect(assessed.problems == [.stuck(stuck)])
        #expect(assessed.messages[0].hasPrefix("stuck: the apply worker keeps failing (4 apply errors) on transaction 750 of n1, commit LSN 0/3000100"))
        #expect(assessed.messages[0].hasSuffix("to skip it: mmlite resolve n2 --skip --from n1"))
        #expect(stuck.failingLSN == LSN("0/3000100"))
        let retrying = StuckLink(publisher: "n1", subscriber: "n2", applyErrors: 4, evidence: .retrying(appliedUpTo: nil))
        #expect(retrying.failingLSN == nil)
        #expect(retrying.summary.contains("the failing transaction follows the start"))
    }

    @Test("retained WAL warns; an unreachable subscriber's slot says part --force")
    func retained() {
        var link = healthyLink()
        let warned = link.assess(Thresholds(), retainedWarningBytes: 1 << 20, stuck: nil)
        #expect(warned.health == .warning)
        #expect(warned.messages == ["slot mmlite_shop_n2 retains 16.0 MiB of WAL on n1"] || warned.messages[0].hasPrefix("slot mmlite_shop_n2 retains "))
        link.subscriberReachable = false
        link.subscriptionExists = nil; link.subscriptionEnabled = nil; link.workerPID = nil
        let gone = link.assess(Thresholds(), retainedWarningBytes: 1 << 30, stuck: nil)
        #expect(gone.health == .critical)
        #expect(gone.messages.last == "n1's slot mmlite_shop_n2 keeps WAL for n2 while it is unreachable; if it is gone for good: mmlite part n2 --force")
    }

    @Test("a node that has not joined: a warning naming join")
    func notJoined() {
        let assessed = healthyLink().notJoined("n2", publication: "mmlite_shop", member: "n1")
        #expect(assessed.health == .warning)
        #expect(assessed.messages == ["n2 has not joined the mesh (no publication mmlite_shop on it): mmlite join n2 --from n1"])
    }
}

