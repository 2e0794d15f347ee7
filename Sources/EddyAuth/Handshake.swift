import NIOCore
import StreamModel

extension AccessControl {
    /// Authenticates a hello's `token` and hands the outcome to `done` on `eventLoop`: at once (before returning)
    /// when authentication is off, else after the authenticator's check (a JWT's signature is checked off the
    /// event loop).
    public func authenticate(
        _ token: String, on eventLoop: any EventLoop,
        _ done: @escaping @Sendable (Result<Principal, EddyError>) -> Void
    ) {
        guard enabled else { return done(.success(.unrestricted)) }
        Task {
            let result: Result<Principal, EddyError>
            do throws(EddyError) {
                result = .success(try await principal(for: token))
            } catch {
                result = .failure(error)
            }
            eventLoop.execute { done(result) }
        }
    }
}
