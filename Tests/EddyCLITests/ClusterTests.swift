import EddyTestSupport
import Foundation
import Testing

/// The deployment files under cluster/: every Kustomize overlay renders with `kubectl kustomize` and validates
/// against the Kubernetes schemas offline (`kubernetes-validate`, pip), and the configuration files they and the
/// systemd units carry pass `eddy config check`.
@Suite("deployment manifests")
struct ClusterTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// Runs a program found on the PATH, waiting on a thread of its own (off Swift's cooperative pool).
    static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> CommandResult {
        try await offPool { try runProgram("/usr/bin/env", arguments, environment: environment) }
    }

    /// Checks a rendered overlay's structure: the node StatefulSet's members list as many nodes as it has replicas
    /// (or, with etcd membership, no list and an etcd), both StatefulSets probe /health and /ready on the admin
    /// port, and which components it carries.
    static let inspect = """
        import sys, yaml
        docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
        kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        nodes = kinds[("StatefulSet", "eddy-node")]
        store = kinds[("StatefulSet", "eddy-store")]
        assert ("PodDisruptionBudget", "eddy-node") in kinds and ("ConfigMap", "eddy-config") not in kinds
        assert any(k == "ConfigMap" and n.startswith("eddy-config") for k, n in kinds), "no configuration"
        c = nodes["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        etcd = env.get("EDDY_NODE_MEMBERSHIP") == "etcd"
        if etcd:
            # The ring comes from etcd: no members list, and an etcd the nodes reach by its Service.
            assert "EDDY_NODE_MEMBERS" not in env, env
            assert env["EDDY_NODE_ETCD"] == "http://eddy-etcd:2379", env
            assert ("StatefulSet", "eddy-etcd") in kinds and ("Service", "eddy-etcd") in kinds
        else:
            members = env["EDDY_NODE_MEMBERS"].split(",")
            assert len(members) == nodes["spec"]["replicas"], (members, nodes["spec"]["replicas"])
            assert all(m == "eddy-node-%d.eddy-node.$(POD_NAMESPACE).svc.cluster.local:9090" % i for i, m in enumerate(members))
        for s in (nodes, store):
            p = s["spec"]["template"]["spec"]["containers"][0]
            assert p["livenessProbe"]["httpGet"]["path"] == "/health" and p["readinessProbe"]["httpGet"]["path"] == "/ready"
            assert s["spec"]["volumeClaimTemplates"], "a persistent volume"
        s3 = "EDDY_NODE_OBJECT_STORE" in env and c.get("envFrom") == [{"secretRef": {"name": "eddy-s3"}}]
        dashboard = ("Service", "eddy-dashboard") in kinds
        config = next(d for (k, n), d in kinds.items() if k == "ConfigMap")["data"]["eddy.yaml"]
        open(sys.argv[2], "w").write(config)
        # The environment of pod 0 in the namespace "default", for `eddy config check`.
        pod = {"POD_NAME": "eddy-node-0", "POD_NAMESPACE": "default"}
        with open(sys.argv[3], "w") as f:
            for name, value in env.items():
                if name.startswith("EDDY_") and value is not None:
                    for k, v in pod.items():
                        value = value.replace("$(%s)" % k, v)
                    f.write("%s=%s\\n" % (name, value))
        print(nodes["spec"]["replicas"], env.get("EDDY_NODE_CACHE_BYTES"), "s3" if s3 else "-", "dashboard" if dashboard else "-",
              "etcd" if etcd else "-")
        """

    @Test(
        "every overlay renders with kubectl kustomize, validates against the Kubernetes schemas, and has its size",
        arguments: [
            ("small", "2 256M - - -"), ("medium", "3 2G s3 dashboard -"), ("large", "6 8G s3 dashboard etcd"),
            ("identities", "2 256M - - -"),
        ])
    func overlay(size: String, expected: String) async throws {
        let rendered = try await Self.run(["kubectl", "kustomize", "\(Self.repository)/cluster/k8s/overlays/\(size)"])
        try #require(rendered.status == 0, "kubectl kustomize \(size): \(rendered.stderr)")
        let path = temporaryPath("k8s-\(size)") + ".yaml"
        let config = temporaryPath("k8s-\(size)-eddy") + ".yaml"
        let environment = temporaryPath("k8s-\(size)-env")
        defer {
            for p in [path, config, environment] { try? FileManager.default.removeItem(atPath: p) }
        }
        try rendered.stdout.write(toFile: path, atomically: true, encoding: .utf8)
        let valid = try await Self.run(["python3", "-m", "kubernetes_validate", "--strict", "-k", "1.32.0", path])
        #expect(valid.status == 0, "\(size) does not validate: \(valid.stdout)\(valid.stderr)")
        #expect(!valid.stdout.contains("ERROR"), "\(valid.stdout)")
        let shape = try await Self.run(["python3", "-c", Self.inspect, path, config, environment])
        #expect(shape.status == 0, "\(size): \(shape.stderr)")
        #expect(shape.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == expected, "\(size): \(shape.stdout)")
        // The configuration file with pod 0's environment: the store and a node's whole command lines check out.
        var variables = ["AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"]
        for line in try String(contentsOfFile: environment, encoding: .utf8).split(separator: "\n") {
            let kv = line.split(separator: "=", maxSplits: 1)
            variables[String(kv[0])] = kv.count == 2 ? String(kv[1]) : ""
        }
        #expect(variables["EDDY_NODE_LISTEN"] == "eddy-node-0.eddy-node.default.svc.cluster.local:9090")
        let check = try await eddyAsync(["config", "check", config], environment: variables)
        #expect(check.status == 0, "\(size)'s eddy.yaml: \(check.stderr)")
    }

    @Test("the Kubernetes identities example: --auth k8s on store and nodes, the gateway's Service, a pod with a token")
    func identities() async throws {
        let rendered = try await Self.run([
            "kubectl", "kustomize", "\(Self.repository)/cluster/k8s/overlays/identities",
        ])
        try #require(rendered.status == 0, "\(rendered.stderr)")
        let path = temporaryPath("k8s-identities") + ".yaml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try rendered.stdout.write(toFile: path, atomically: true, encoding: .utf8)
        let script = """
            import sys, yaml
            docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
            kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "Secret" else d["metadata"]["name"]): d
                     for d in docs}
            secret = kinds[("Secret", "eddy-k8s-auth")]
            assert {"k8s-auth.yaml", "cluster-jwks.json", "service-token"} <= set(secret["data"]), secret["data"].keys()
            for name in ("eddy-node", "eddy-store"):
                spec = kinds[("StatefulSet", name)]["spec"]["template"]["spec"]
                c = spec["containers"][0]
                env = {e["name"]: e for e in c["env"]}
                assert env["EDDY_SECURITY_AUTH"]["value"] == "k8s:/etc/eddy-auth/k8s-auth.yaml", env
                mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
                assert mounts["auth"] == "/etc/eddy-auth", mounts
                volume = next(v for v in spec["volumes"] if v["name"] == "auth")
                assert volume["secret"]["secretName"] == secret["metadata"]["name"], volume
            node = kinds[("StatefulSet", "eddy-node")]["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e for e in node["env"]}
            assert env["EDDY_NODE_HTTP_LISTEN"]["value"] == "0.0.0.0:9290"
            assert env["EDDY_SECURITY_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
            assert {"name": "http", "containerPort": 9290} in node["ports"]
            assert kinds[("Service", "eddy-http")]["spec"]["ports"][0]["targetPort"] == "http"
            pod = kinds[("Pod", "eddy-web-client")]["spec"]
            assert pod["serviceAccountName"] == "eddy-web-client" and ("ServiceAccount", "eddy-web-client") in kinds
            token = pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
            assert token["audience"] == "eddy" and token["path"] == "token", token
            print("ok")
            """
        let shape = try await Self.run(["python3", "-c", script, path])
        #expect(shape.status == 0 && shape.stdout.contains("ok"), "\(shape.stderr)")
    }

    @Test("the systemd units' configuration file passes eddy config check, and a unit file is not a config file")
    func systemd() async throws {
        // One node machine's view: its own address from /etc/eddy/node.env.
        let check = try await eddyAsync(
            ["config", "check", "\(Self.repository)/cluster/systemd/eddy.yaml"],
            environment: ["EDDY_NODE_LISTEN": "10.0.0.11:9090", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"])
        #expect(check.status == 0, "\(check.stderr)")
        let stranger = try await eddyAsync(
            ["config", "check", "\(Self.repository)/cluster/systemd/eddy.yaml"],
            environment: ["EDDY_NODE_LISTEN": "10.0.0.99:9090", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"])
        #expect(
            stranger.status == 1 && stranger.stderr.contains("members"), "a node not in the ring: \(stranger.stderr)")
        for unit in ["eddy-store.service", "eddy-node.service"] {
            let text = try String(contentsOfFile: "\(Self.repository)/cluster/systemd/\(unit)", encoding: .utf8)
            #expect(
                text.contains(
                    "ExecStart=/usr/local/bin/eddy \(unit.hasPrefix("eddy-store") ? "store" : "node") --config /etc/eddy/eddy.yaml"
                ))
            #expect(text.contains("KillSignal=SIGTERM") && text.contains("TimeoutStopSec=45"))
        }
        let refused = try await eddyAsync(["config", "check", "\(Self.repository)/cluster/systemd/eddy-node.service"])
        #expect(refused.status != 0)
    }
}
