import Foundation
import PortcullisCore

/// Every plugin rule set of a plugins directory, validated as a whole. A `PluginSet` is
/// immutable: a reload builds a new one and the new worker generation uses it, while requests
/// in flight finish with the set they started with.
public struct PluginSet: Sendable {
    /// Transformation rule sets by name.
    public let transforms: [String: TransformRuleSet]

    public init(transforms: [String: TransformRuleSet] = [:]) {
        self.transforms = transforms
    }

    public static let empty = PluginSet()

    /// Plugin types a rule file may declare in `"type"`.
    static let knownTypes = ["transform"]

    /// Loads every `*.json` file of `directory` from `files` (in name order; other files such as
    /// a README are ignored). Every file is parsed and validated; all issues are thrown together,
    /// each with file, JSON pointer and reason. Only a fully valid set is returned.
    public static func load(directory: String, files: any ConfigFiles,
                            defaultMaxBodyBytes: Int64 = TransformSettings().maxBodyBytes) throws(ConfigErrors) -> PluginSet {
        let loaded = loadReportingAll(directory: directory, files: files, defaultMaxBodyBytes: defaultMaxBodyBytes)
        if !loaded.issues.isEmpty { throw ConfigErrors(loaded.issues) }
        return loaded.set
    }

    /// What `load` reads, with every issue instead of throwing: the valid rule sets, and the
    /// names every rule set declared (valid or not), so that route references can be checked
    /// in the same run as the rule files.
    public static func loadReportingAll(directory: String, files: any ConfigFiles,
                                        defaultMaxBodyBytes: Int64 = TransformSettings().maxBodyBytes)
        -> (set: PluginSet, issues: [ConfigIssue], declaredNames: Set<String>) {
        guard let names = files.regularFiles(in: directory) else {
            return (.empty, [ConfigIssue(file: directory, pointer: "", message: "cannot read the plugins directory")], [])
        }
        var ruleFiles: [(path: String, bytes: [UInt8])] = []
        var issues: [ConfigIssue] = []
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        for name in names.sorted() where name.hasSuffix(".json") && !name.hasPrefix(".") {
            let path = base + "/" + name
            guard let bytes = files.contents(path) else {
                issues.append(ConfigIssue(file: path, pointer: "", message: "cannot read file"))
                continue
            }
            ruleFiles.append((path, bytes))
        }
        let parsed = parseReportingAll(files: ruleFiles, defaultMaxBodyBytes: defaultMaxBodyBytes)
        return (parsed.set, issues + parsed.issues, parsed.declaredNames)
    }

    /// Parses and validates rule files given as bytes (`path` is used in messages only).
    public static func parse(files: [(path: String, bytes: [UInt8])],
                             defaultMaxBodyBytes: Int64 = TransformSettings().maxBodyBytes) throws(ConfigErrors) -> PluginSet {
        let parsed = parseReportingAll(files: files, defaultMaxBodyBytes: defaultMaxBodyBytes)
        if !parsed.issues.isEmpty { throw ConfigErrors(parsed.issues) }
        return parsed.set
    }

    /// `parse` with every issue instead of throwing, and the names every rule set declared.
    public static func parseReportingAll(files: [(path: String, bytes: [UInt8])], defaultMaxBodyBytes: Int64 = TransformSettings().maxBodyBytes)
        -> (set: PluginSet, issues: [ConfigIssue], declaredNames: Set<String>) {
        var issues: [ConfigIssue] = []
        var declared = Set<String>()
        var transforms: [String: TransformRuleSet] = [:]
        var firstSeen: [String: String] = [:]
        for file in files {
            let json: JSONValue
            do {
                json = try JSONCodec.parse(file.bytes, rejectDuplicateKeys: true)
            } catch {
                issues.append(ConfigIssue(file: file.path, pointer: "", message: error.description))
                continue
            }
            let diagnostics = ConfigDiagnostics(file: file.path)
            let root = ConfigNode(value: json, pointer: "", diagnostics: diagnostics)
            let nodes: [ConfigNode]
            switch json {
            case .object: nodes = [root]
            case .array(let items):
                if items.isEmpty { root.fail("a rule file must hold at least one rule set") }
                nodes = root.array() ?? []
            default:
                root.fail("a rule file must hold a rule set object or an array of them, found \(json.typeName)")
                nodes = []
            }
            for node in nodes {
                guard node.object(required: true) != nil else { continue }
                if let name = node["name"].value?.stringValue { declared.insert(name) }
                guard let type = node["type"].nonEmptyString(required: true) else { continue }
                guard type == "transform" else {
                    node["type"].fail("unknown plugin type \"\(type)\" (known: \(knownTypes.joined(separator: ", ")))")
                    continue
                }
                guard let set = TransformSchema.read(node, defaultMaxBodyBytes: defaultMaxBodyBytes) else { continue }
                let location = "\(file.path): \(node.pointer.isEmpty ? "/" : node.pointer)"
                if let first = firstSeen[set.name] {
                    node["name"].fail("duplicate rule set name \"\(set.name)\" (first in \(first))")
                } else {
                    firstSeen[set.name] = location
                    transforms[set.name] = set
                }
            }
            issues += diagnostics.issues
        }
        return (PluginSet(transforms: transforms), issues, declared)
    }

    /// Issues for routes that name a rule set this set does not have, reported against the
    /// gateway config file (`config/portcullis.json: /routes/2/plugins/0: unknown plugin rule set "x"`).
    public func validate(routeReferences routes: [RouteConfig], configFile: String) -> [ConfigIssue] {
        Self.validate(routeReferences: routes, declared: Set(transforms.keys), configFile: configFile)
    }

    /// Issues for routes that name a rule set no rule file declares (a declared rule set with
    /// errors of its own is reported by its file, not again by every route naming it).
    public static func validate(routeReferences routes: [RouteConfig], declared: Set<String>, configFile: String) -> [ConfigIssue] {
        var issues: [ConfigIssue] = []
        for route in routes {
            for (i, name) in route.plugins.enumerated() where !declared.contains(name) {
                issues.append(ConfigIssue(file: configFile, pointer: "/routes/\(route.index)/plugins/\(i)",
                                          message: "unknown plugin rule set \"\(name)\""))
            }
        }
        return issues
    }

    /// The named rule sets of the request phase, in the given order (unknown names skipped).
    public func requestRuleSets(names: [String]) -> [TransformRuleSet] {
        names.compactMap { transforms[$0] }.filter { $0.phase == .request }
    }

    /// The named rule sets of the response phase, in the given order (unknown names skipped).
    public func responseRuleSets(names: [String]) -> [TransformRuleSet] {
        names.compactMap { transforms[$0] }.filter { $0.phase == .response }
    }

    /// The chain for a route's `plugins` list. Build it once per route when a configuration
    /// generation starts; an unknown name is an error (`validate` reports it at load time).
    public func chain(_ names: [String]) throws(TransformError) -> TransformChain {
        if let unknown = names.first(where: { transforms[$0] == nil }) {
            throw TransformError(problem: .internalError("unknown plugin rule set \"\(unknown)\""), ruleSet: unknown)
        }
        return TransformChain(request: requestRuleSets(names: names), response: responseRuleSets(names: names))
    }

    /// One chain per route, indexed like `routes` (routes with no plugins get `.empty`).
    public func chains(for routes: [RouteConfig]) throws(TransformError) -> [TransformChain] {
        var result: [TransformChain] = []
        result.reserveCapacity(routes.count)
        for route in routes { result.append(route.plugins.isEmpty ? .empty : try chain(route.plugins)) }
        return result
    }

    // MARK: Name-based conveniences (build the chain each call; prefer `chains(for:)`)

    public func needsRequestBody(names: [String], request: TransformableRequest, context: TemplateContext) throws(TransformError) -> Bool {
        try chain(names).needsRequestBody(request, context: context)
    }

    @discardableResult
    public func applyRequest(_ names: [String], to request: inout TransformableRequest,
                             context: TemplateContext) throws(TransformError) -> BodyOutcome {
        try chain(names).applyRequest(to: &request, context: context)
    }

    public func needsResponseBody(names: [String], status: Int, headers: HTTPHeaders,
                                  context: TemplateContext) throws(TransformError) -> Bool {
        try chain(names).needsResponseBody(status: status, headers: headers, context: context)
    }

    @discardableResult
    public func applyResponse(_ names: [String], status: inout Int, headers: inout HTTPHeaders, body: inout [UInt8]?,
                              context: TemplateContext) throws(TransformError) -> BodyOutcome {
        try chain(names).applyResponse(status: &status, headers: &headers, body: &body, context: context)
    }
}
