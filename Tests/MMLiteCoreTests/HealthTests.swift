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
        #expect(link.evaluate(Thresholds()).1 == ["lag 90 s"])
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
        #expect(problems.contains { $0.contains(expected) }, "\(problems)")
        #expect(health.nagiosCode == 2)
    }
}
