import Foundation
import PortcullisCore
import PortcullisPlugins

/// A configuration with everything it refers to loaded and validated: what `check` and
/// `reload` validate and what a worker serves.
public struct LoadedGateway: Sendable {
    public let configPath: String
    public let config: GatewayConfig
    public let plugins: PluginSet
    /// Transformation chains, indexed like `config.routes`.
    public let chains: [TransformChain]
}

public enum GatewayLoader {
    /// Loads the config file and the plugin rule files it names; throws every issue found.
    public static func load(configPath: String) throws(ConfigErrors) -> LoadedGateway {
        try load(configPath: configPath, bytes: readConfig(configPath))
    }

    /// The config file's bytes, read once, so that what was validated is exactly what a
    /// generation's workers run.
    public static func readConfig(_ path: String) throws(ConfigErrors) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigErrors([ConfigIssue(file: path, pointer: "", message: "cannot read file")])
        }
        return Array(data)
    }

    /// Loads a config from `bytes` as if read from `configPath` (relative paths and error
    /// messages refer to that file).
    public static func load(configPath: String, bytes: [UInt8]) throws(ConfigErrors) -> LoadedGateway {
        // Every kind of issue is collected before throwing: config, rule files, route references.
        let (config, configIssues) = try ConfigLoader.parseReportingAll(bytes: bytes, file: configPath)
        var issues = configIssues
        var plugins = PluginSet.empty
        var declared = Set<String>()
        if let directory = config.pluginsDirectory {
            let loaded = PluginSet.loadReportingAll(directory: directory, defaultMaxBodyBytes: config.transform.maxBodyBytes)
            (plugins, declared) = (loaded.set, loaded.declaredNames)
            issues += loaded.issues
        }
        issues += PluginSet.validate(routeReferences: config.routes, declared: declared, configFile: configPath)
        if !issues.isEmpty { throw ConfigErrors(issues) }
        let chains: [TransformChain]
        do {
            chains = try plugins.chains(for: config.routes)
        } catch {
            throw ConfigErrors([ConfigIssue(file: configPath, pointer: "/routes", message: error.description)])
        }
        return LoadedGateway(configPath: configPath, config: config, plugins: plugins, chains: chains)
    }
}
