import DequeModule

/// DeficitRoundRobin is deficit round robin (Shreedhar and Varghese, "Efficient Fair Queuing Using Deficit
/// Round Robin", SIGCOMM 1995) over the three QoS classes, pulled one item at a time by workers.
///
/// Each class has a FIFO lane, a quantum in bytes (its weight x the base quantum) and a deficit counter. The
/// backlogged classes take turns in a ring; on its turn a class adds its quantum to its deficit once, and
/// is served items from its head while the head's cost fits in the deficit; then the turn passes. A class whose
/// lane empties drops its deficit (no credit is hoarded while idle). Under saturation each class therefore gets
/// bytes in proportion to its quantum, whatever its items' sizes, and a class that becomes backlogged is served
/// within one round: after at most one turn of every other class. Strict priority would starve `bulk`; counting
/// jobs instead of bytes would let large items take more than their share.
///
/// Per-class concurrency caps: a class holding `cap` leases is passed over (keeping its deficit) until one is
/// returned with ``finished(_:)``.
public struct DeficitRoundRobin<Item>: Sendable where Item: Sendable {
    struct Lane: Sendable {
        var items: Deque<(item: Item, cost: Int)> = []
        var deficit = 0
        var quantum: Int
        var cap: Int
        var inFlight = 0
    }

    var lanes: [Lane]
    /// The backlogged classes in turn order; the first has the turn.
    var ring: Deque<QoSClass> = []
    /// Whether the class at the head of the ring already added its quantum this turn.
    var turnCharged = false

    /// A scheduler with each class's quantum (bytes) and concurrency cap.
    public init(quanta: [QoSClass: Int], caps: [QoSClass: Int]) {
        lanes = QoSClass.allCases.map { Lane(quantum: max(1, quanta[$0] ?? 1), cap: max(1, caps[$0] ?? 1)) }
    }

    /// Items waiting in `qos`'s lane.
    public func count(_ qos: QoSClass) -> Int { lanes[Int(qos.rawValue)].items.count }

    /// Items of `qos` handed out and not yet finished.
    public func inFlight(_ qos: QoSClass) -> Int { lanes[Int(qos.rawValue)].inFlight }

    /// Adds an item of `cost` bytes at the tail of its class's lane.
    public mutating func push(_ item: Item, qos: QoSClass, cost: Int) {
        let index = Int(qos.rawValue)
        lanes[index].items.append((item, max(1, cost)))
        if lanes[index].items.count == 1 && !ring.contains(qos) { ring.append(qos) }
    }

    /// Removes every waiting item for which `remove` is true (a purge, a message leaving for the dead letters).
    public mutating func removeAll(where remove: (Item) -> Bool) {
        for index in lanes.indices { lanes[index].items.removeAll { remove($0.item) } }
    }

    /// The next item by deficit round robin, or nil when nothing waits or every waiting class is at its cap.
    /// - Complexity: O(1) amortized per item when quanta are at least the largest cost.
    public mutating func pop() -> (item: Item, qos: QoSClass)? {
        var passedOver = 0
        while let qos = ring.first {
            let index = Int(qos.rawValue)
            if lanes[index].items.isEmpty {
                lanes[index].deficit = 0
                ring.removeFirst()
                turnCharged = false
                continue
            }
            if lanes[index].inFlight >= lanes[index].cap {
                // At its cap: pass the turn on, keeping the deficit it has.
                passedOver += 1
                if passedOver >= ring.count { return nil }
                ring.append(ring.removeFirst())
                turnCharged = false
                continue
            }
            if !turnCharged {
                lanes[index].deficit += lanes[index].quantum
                turnCharged = true
            }
            let head = lanes[index].items.first!
            if head.cost <= lanes[index].deficit {
                lanes[index].items.removeFirst()
                lanes[index].deficit -= head.cost
                lanes[index].inFlight += 1
                if lanes[index].items.isEmpty {
                    lanes[index].deficit = 0
                    ring.removeFirst()
                    turnCharged = false
                }
                return (head.item, qos)
            }
            // The head does not fit this turn: the deficit carries to the next round.
            ring.append(ring.removeFirst())
            turnCharged = false
            passedOver = 0
        }
        return nil
    }

    /// An item of `qos` handed out by ``pop()`` is done (acked, nacked or expired): its class may take another.
    public mutating func finished(_ qos: QoSClass) {
        let index = Int(qos.rawValue)
        lanes[index].inFlight = max(0, lanes[index].inFlight - 1)
    }
}
