import CryptoExtras
import Foundation
import JWTKit

/// A stand-in for a Kubernetes cluster's service-account token issuer, for tests: an RSA key (RS256) and a P-256
/// key (ES256), the key set the cluster would publish at `/openid/v1/jwks`, and projected tokens signed with them.
public struct KubernetesTokenIssuer: Sendable {
    public static let issuer = "https://kubernetes.default.svc.cluster.local"
    let rsa: JWTKit.Insecure.RSA.PrivateKey
    let ecdsa: ES256PrivateKey

    /// The claims of a projected service-account token.
    struct Claims: JWTPayload {
        struct Kubernetes: Codable {
            struct Named: Codable {
                var name: String
                var uid: String
            }
            var namespace: String
            var serviceaccount: Named
            var pod: Named
        }
        var iss: IssuerClaim
        var aud: AudienceClaim
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim
        var iat: IssuedAtClaim
        var kubernetes: Kubernetes

        enum CodingKeys: String, CodingKey {
            case iss, aud, sub, exp, nbf, iat
            case kubernetes = "kubernetes.io"
        }

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// New keys.
    public init() throws {
        rsa = try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        ecdsa = ES256PrivateKey()
    }

    /// The public keys as a JWKS document: `rsa-1` (with `alg`), `ec-1` (without, as its type says).
    public var jwks: String {
        get throws {
            let primitives = try rsa.publicKey.getKeyPrimitives()
            let n = Self.base64URL(primitives.modulus)
            let e = Self.base64URL(primitives.publicExponent)
            guard let (x, y) = ecdsa.publicKey.parameters else { throw CocoaError(.coderInvalidValue) }
            return """
                {"keys": [
                  {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "rsa-1", "n": "\(n)", "e": "\(e)"},
                  {"kty": "EC", "use": "sig", "crv": "P-256", "kid": "ec-1", "x": "\(x)", "y": "\(y)"}
                ]}
                """
        }
    }

    /// A projected token of `system:serviceaccount:NAMESPACE:ACCOUNT`, signed with `kid` (`rsa-1` or `ec-1`).
    /// `claimedNamespace` is what its `kubernetes.io` claim says (the namespace unless given).
    public func token(
        namespace: String, account: String, audience: String = "eddy", issuer: String = KubernetesTokenIssuer.issuer,
        kid: String = "rsa-1", expires: TimeInterval = 3600, claimedNamespace: String? = nil,
        subject: String? = nil
    ) async throws -> String {
        let keys = JWTKeyCollection()
        if kid == "ec-1" {
            await keys.add(ecdsa: ecdsa, kid: JWKIdentifier(string: kid))
        } else {
            await keys.add(rsa: rsa, digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        }
        let now = Date()
        return try await Self.sign(
            with: keys, kid: kid, namespace: namespace, account: account, audience: audience, issuer: issuer,
            from: now.addingTimeInterval(-60), until: now.addingTimeInterval(expires),
            claimedNamespace: claimedNamespace, subject: subject)
    }

    /// A projected token of `system:serviceaccount:NAMESPACE:ACCOUNT` signed with `kid` of `keys`, valid from
    /// `from` until `until` (the fuzz corpus signs one with a fixed key, valid for decades).
    public static func sign(
        with keys: JWTKeyCollection, kid: String, namespace: String, account: String, audience: String = "eddy",
        issuer: String = KubernetesTokenIssuer.issuer, from: Date, until: Date, claimedNamespace: String? = nil,
        subject: String? = nil
    ) async throws -> String {
        let claims = Claims(
            iss: IssuerClaim(value: issuer), aud: AudienceClaim(value: [audience]),
            sub: SubjectClaim(value: subject ?? "system:serviceaccount:\(namespace):\(account)"),
            exp: ExpirationClaim(value: until), nbf: NotBeforeClaim(value: from), iat: IssuedAtClaim(value: from),
            kubernetes: Claims.Kubernetes(
                namespace: claimedNamespace ?? namespace,
                serviceaccount: .init(name: account, uid: UUID().uuidString),
                pod: .init(name: "\(account)-pod", uid: UUID().uuidString)))
        return try await keys.sign(claims, kid: JWKIdentifier(string: kid))
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
