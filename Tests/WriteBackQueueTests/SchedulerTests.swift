import Testing

@testable import WriteBackQueue

/// Deficit round robin and the broker's state machine, on a clock the tests move by hand.
@Suite struct SchedulerTests {
    static let weights: [QoSClass: Int] = [.critical: 8, .standard: 4, .bulk: 1]

    func makeScheduler(caps: Int = 1000) -> DeficitRoundRobin<Int> {
        var quanta: [QoSClass: Int] = [:]
        for (qos, weight) in Self.weights { quanta[qos] = weight * 64 << 10 }
        return DeficitRoundRobin(
            quanta: quanta, caps: Dictionary(uniqueKeysWithValues: QoSClass.allCases.map { ($0, caps) }))
    }

    @Test func sharesFollowWeightsInBytesUnderSaturation() {
        var drr = makeScheduler()
        var rng = SystemRandomNumberGenerator()
        var next = 0
        var served: [QoSClass: Int] = [:]
        var sizes: [Int: Int] = [:]
        // Every class stays backlogged; sizes vary, and bulk items are 4x larger.
        func push(_ qos: QoSClass) {
            while drr.count(qos) < 50 {
                let size = Int.random(in: 1_000...16_000, using: &rng) * (qos == .bulk ? 4 : 1)
                sizes[next] = size
                drr.push(next, qos: qos, cost: size)
                next += 1
            }
        }
        for qos in QoSClass.allCases { push(qos) }
        for _ in 0..<20_000 {
            guard let (item, qos) = drr.pop() else { break }
            served[qos, default: 0] += sizes[item]!
            drr.finished(qos)
            push(qos)
        }
        let total = Double(served.values.reduce(0, +))
        let weightSum = Double(Self.weights.values.reduce(0, +))
        for qos in QoSClass.allCases {
            let share = Double(served[qos] ?? 0) / total
            let expected = Double(Self.weights[qos]!) / weightSum
            #expect(abs(share - expected) / expected < 0.10, "\(qos): share \(share), expected \(expected)")
        }
    }

    @Test func aBackloggedClassWaitsAtMostOneRound() {
        var drr = makeScheduler()
        var next = 0
        for _ in 0..<1000 {
            drr.push(next, qos: .critical, cost: 8_000)
            next += 1
            drr.push(next, qos: .standard, cost: 8_000)
            next += 1
        }
        // Serve a while with bulk idle, then bulk becomes backlogged.
        for _ in 0..<37 {
            let (_, qos) = drr.pop()!
            drr.finished(qos)
        }
        drr.push(-1, qos: .bulk, cost: 60_000)
        var bytesBefore = 0
        while true {
            let (item, qos) = drr.pop()!
            drr.finished(qos)
            if item == -1 { break }
            bytesBefore += 8_000
        }
        // At most one turn of each other class: their quanta (plus what the current turn had left).
        let round = (8 + 4) * 64 << 10
        #expect(bytesBefore <= round + 8 * 64 << 10, "bulk waited \(bytesBefore) bytes of others' work")
    }

    @Test func strictPriorityWouldStarveButDRRDoesNot() {
        var drr = makeScheduler()
        for i in 0..<10_000 { drr.push(i, qos: .critical, cost: 1_000) }
        drr.push(-1, qos: .bulk, cost: 1_000)
        var position = 0
        while let (item, qos) = drr.pop() {
            drr.finished(qos)
            position += 1
            if item == -1 { break }
        }
        // One turn of critical (its quantum / item size), then bulk.
        #expect(position <= (8 * 64 << 10) / 1_000 + 1, "bulk served after \(position) items")
    }

    @Test func concurrencyCapsPassTheTurnOn() {
        var drr = makeScheduler(caps: 2)
        for i in 0..<10 { drr.push(i, qos: .critical, cost: 100) }
        for i in 10..<20 { drr.push(i, qos: .bulk, cost: 100) }
        var taken: [QoSClass] = []
        while let (_, qos) = drr.pop() { taken.append(qos) }
        // Two of each class, then both are at their caps.
        #expect(taken.filter { $0 == .critical }.count == 2)
        #expect(taken.filter { $0 == .bulk }.count == 2)
        #expect(drr.inFlight(.critical) == 2 && drr.inFlight(.bulk) == 2)
        drr.finished(.bulk)
        #expect(drr.inFlight(.bulk) == 1)
        #expect(drr.pop()?.qos == .bulk)
        #expect(drr.pop() == nil)
    }

    @Test func anItemLargerThanAQuantumIsServedAfterEnoughRounds() {
        var drr = DeficitRoundRobin<Int>(quanta: [.critical: 100, .standard: 100, .bulk: 100], caps: [:])
        drr.push(1, qos: .bulk, cost: 1_000)
        #expect(drr.pop()?.item == 1)
    }
}
