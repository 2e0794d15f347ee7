import Testing

@testable import CacheNode
