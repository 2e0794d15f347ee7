import StreamModel

/// HashRing maps keys (segment names) onto members (`HOST:PORT` of cache nodes) by consistent hashing with
/// virtual nodes, and bounds each member's load (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with
/// Bounded Loads", SODA 2018).
///
/// Each member owns `virtualNodes` points on a 64-bit circle, at `hash("\(i)\(member)")` for i in
/// 0..<virtualNodes (the point-naming of groupcache's `consistenthash`). A key belongs to the member of the first
/// point clockwise from `hash(key)` (``candidate(for:)``). With bounded loads (``assign(_:)``), keys are placed in
/// the order of their hashes, each on the first point clockwise whose member holds fewer than
/// `ceil((1 + loadFactor) x keys / members)` keys, so no member owns more than that.
///
/// A ring is a value with an ``epoch``: every change of members gives a ring with the next epoch, so two views
/// can be told apart by their epochs and their ``fingerprint``s.
public struct HashRing: Sendable {
    /// A hash of a key or a point's name onto the circle.
    public typealias Hash = @Sendable (String) -> UInt64

    /// Settings of a ring.
    public struct Configuration: Sendable {
        /// Points per member on the circle.
        public var virtualNodes: Int = 128
        /// The bounded-load slack `e`: no member owns more than `ceil((1 + e) x mean)` keys.
        public var loadFactor: Double = 0.25
        /// The hash of keys and point names; tests inject a predictable one.
        public var hash: Hash = HashRing.defaultHash

        /// Creates a configuration with the defaults.
        public init() {}
    }

    /// The default hash: FNV-1a 64 of the UTF-8 bytes, then SplitMix64's finalizer so that names differing
    /// only in their last characters still spread over the whole circle.
    public static let defaultHash: Hash = { SeededRandom.mix(RoutingKey.fnv1a64($0)) }

    /// The members, sorted.
    public let members: [String]
    /// The view's number: 1 for the first ring, one more for each change of members.
    public let epoch: UInt64
    /// The settings the ring was built with.
    public let configuration: Configuration
    /// The points of the circle in hash order, each with the index of its member in ``members``.
    private let points: [(hash: UInt64, member: Int)]

    /// Creates a ring of `members` (duplicates are ignored).
    public init<S: Sequence<String>>(members: S, epoch: UInt64 = 1, configuration: Configuration = Configuration()) {
        let sorted = Array(Set(members)).sorted()
        self.members = sorted
        self.epoch = epoch
        self.configuration = configuration
        var points: [(hash: UInt64, member: Int)] = []
        points.reserveCapacity(sorted.count * configuration.virtualNodes)
        for (m, member) in sorted.enumerated() {
            for i in 0..<configuration.virtualNodes {
                points.append((configuration.hash("\(i)\(member)"), m))
            }
        }
        // Ties (possible with a predictable test hash) break by member name, so every node orders them alike.
        points.sort { ($0.hash, sorted[$0.member]) < ($1.hash, sorted[$1.member]) }
        self.points = points
    }

    /// A ring of `members` with the next epoch, or this ring when the members are the same.
    public func with(members newMembers: some Sequence<String>) -> HashRing {
        let set = Set(newMembers)
        guard set != Set(members) else { return self }
        return HashRing(members: set, epoch: epoch + 1, configuration: configuration)
    }

    /// The ring with `member` added (next epoch), or this ring if it is a member already.
    public func adding(_ member: String) -> HashRing { with(members: members + [member]) }

    /// The ring with `member` removed (next epoch), or this ring if it is not a member.
    public func removing(_ member: String) -> HashRing { with(members: members.filter { $0 != member }) }

    /// A 64-bit digest of the member list: equal rings (same members, same settings) have equal fingerprints
    /// whatever their epochs, so nodes can tell a real disagreement from a numbering one.
    public var fingerprint: UInt64 {
        var h: UInt64 = RoutingKey.fnv1a64(members.joined(separator: ","))
        h ^= UInt64(configuration.virtualNodes) &* 0x9E37_79B9_7F4A_7C15
        return SeededRandom.mix(h)
    }

    /// The index of the first point at or clockwise after `hash`.
    private func firstPoint(atOrAfter hash: UInt64) -> Int {
        var lo = 0
        var hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid].hash < hash { lo = mid + 1 } else { hi = mid }
        }
        return lo == points.count ? 0 : lo
    }

    /// The member of the first point clockwise from `key`'s hash: plain consistent hashing, no load bound.
    /// - Returns: nil for an empty ring.
    /// - Complexity: O(log(members x virtualNodes)).
    public func candidate(for key: String) -> String? {
        guard !points.isEmpty else { return nil }
        return members[points[firstPoint(atOrAfter: configuration.hash(key))].member]
    }

    /// The most keys one member may own when `keyCount` keys are placed: `ceil((1 + e) x keyCount / members)`.
    public func capacity(forKeys keyCount: Int) -> Int {
        guard !members.isEmpty else { return 0 }
        let mean = Double(keyCount) / Double(members.count)
        return max(1, Int((mean * (1 + configuration.loadFactor)).rounded(.up)))
    }

    /// Places `keys` with bounded loads: in the order of their hashes (ties by key), each on the first point
    /// clockwise from its hash whose member is under ``capacity(forKeys:)``. Every node that places the same
    /// keys on the same ring gets the same answer.
    /// - Returns: the owner of each key (empty for an empty ring).
    /// - Complexity: O(k log k + k log p) when no member is full; a key skips at most the points of full members.
    public func assign(_ keys: some Sequence<String>) -> Assignment {
        guard !points.isEmpty else { return Assignment(owners: [:], capacity: 0) }
        let hashed = Set(keys).map { (hash: configuration.hash($0), key: $0) }.sorted {
            ($0.hash, $0.key) < ($1.hash, $1.key)
        }
        let cap = capacity(forKeys: hashed.count)
        var load = [Int](repeating: 0, count: members.count)
        var owners: [String: String] = [:]
        owners.reserveCapacity(hashed.count)
        for (hash, key) in hashed {
            var p = firstPoint(atOrAfter: hash)
            // Some member is always under the cap: caps sum to at least the number of keys.
            while load[points[p].member] >= cap { p = p + 1 == points.count ? 0 : p + 1 }
            load[points[p].member] += 1
            owners[key] = members[points[p].member]
        }
        return Assignment(owners: owners, capacity: cap)
    }

    /// Assignment is the result of ``HashRing/assign(_:)``: who owns each key.
    public struct Assignment: Sendable, Equatable {
        /// Key to owning member.
        public let owners: [String: String]
        /// The load bound that was applied.
        public let capacity: Int

        /// The owner of `key`, or nil if the key was not placed.
        public subscript(key: String) -> String? { owners[key] }

        /// Keys per member (members without keys are absent).
        public var loads: [String: Int] { owners.values.reduce(into: [:]) { $0[$1, default: 0] += 1 } }
    }
}
