//! Who may do what, checked in one place before any handler.
//!
//! Levels are ordered `none < help < run < admin`. A person's level in a room:
//! 1. bridge admins (`[bridge].admins`) have `admin` everywhere;
//! 2. otherwise the grants whose rule matches them, from the room's own rules (set in the admin
//!    room) and then `[permissions].rules`: a matching `none` (a deny) wins; else the highest
//!    matching level;
//! 3. no rule matches: `[permissions].default`.
//!
//! A rule is a user id, a glob (`@ops-*:example.org`), `*:server`, a server name, or
//! `power>=N` (the person's power level in the room, as ruma reads the room's state: in room
//! version 12 the creators have unlimited power and are absent from `m.room.power_levels`).

use std::{fmt, str::FromStr};

use ruma::{
    OwnedUserId, RoomVersionId, UserId,
    events::{
        AnyStateEvent, StateEvent, StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsSource, UserPowerLevel},
    },
    room_version_rules::AuthorizationRules,
    serde::Raw,
};
use serde::{Deserialize, Deserializer, de};

/// A permission level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Nothing.
    None,
    /// Read `help`; `login`, `whoami` and `logout` (ping needs no level).
    Help,
    /// Run commands.
    Run,
    /// Administer the bridge.
    Admin,
}

impl Level {
    /// The name used in config and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Help => "help",
            Level::Run => "run",
            Level::Admin => "admin",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Level::None),
            "help" => Ok(Level::Help),
            "run" => Ok(Level::Run),
            "admin" => Ok(Level::Admin),
            other => Err(format!(
                "{other:?} is not a level: use none, help, run or admin"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Who a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A user id, glob, `*:server` or server name.
    Users(UserRule),
    /// Everyone whose power level in the room is at least this.
    PowerAtLeast(i64),
}

impl Rule {
    fn matches(&self, user: &UserId, power: Option<Power>) -> bool {
        match self {
            Rule::Users(rule) => rule.matches(user),
            Rule::PowerAtLeast(n) => power.is_some_and(|p| p.at_least(*n)),
        }
    }
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(n) = s.strip_prefix("power>=") {
            return n
                .trim()
                .parse()
                .map(Rule::PowerAtLeast)
                .map_err(|_| format!("{s:?}: write power>=N with a whole number, e.g. power>=50"));
        }
        s.parse().map(Rule::Users)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Users(rule) => write!(f, "{rule}"),
            Rule::PowerAtLeast(n) => write!(f, "power>={n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A rule and the level it grants (`none` = deny).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Who.
    pub rule: Rule,
    /// What.
    pub level: Level,
}

/// A power level; room v12 creators have unlimited power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Above every number.
    Infinite,
    /// A number from `m.room.power_levels`.
    Value(i64),
}

impl Power {
    fn at_least(self, n: i64) -> bool {
        match self {
            Power::Infinite => true,
            Power::Value(v) => v >= n,
        }
    }
}

/// The level `grants` give `user` (deny wins, else the highest match, else `default`).
pub fn evaluate(grants: &[Grant], user: &UserId, power: Option<Power>, default: Level) -> Level {
    let matching: Vec<Level> = grants
        .iter()
        .filter(|g| g.rule.matches(user, power))
        .map(|g| g.level)
        .collect();
    if matching.is_empty() {
        default
    } else if matching.contains(&Level::None) {
        Level::None
    } else {
        matching.into_iter().max().unwrap_or(default)
    }
}

/// A room's power levels, as ruma computes them from the room's state: string power levels
/// of older room versions count, room version 12's creators (and `additional_creators`) have
/// unlimited power, and a room without `m.room.power_levels` gives its creator 100.
#[derive(Debug, Clone)]
pub struct RoomPower {
    levels: RoomPowerLevels,
}

impl RoomPower {
    /// Reads `m.room.create` and `m.room.power_levels` from a room's state events; events
    /// that do not parse count as absent.
    pub fn from_state(events: &[Raw<AnyStateEvent>]) -> RoomPower {
        let mut create = None;
        let mut power_levels = RoomPowerLevelsSource::None;
        for raw in events {
            let kind = raw.get_field::<StateEventType>("type").ok().flatten();
            if !matches!(
                kind,
                Some(StateEventType::RoomCreate | StateEventType::RoomPowerLevels)
            ) {
                continue;
            }
            match raw.deserialize() {
                Ok(AnyStateEvent::RoomCreate(StateEvent::Original(event))) => {
                    create = Some((event.sender, event.content));
                }
                Ok(AnyStateEvent::RoomPowerLevels(StateEvent::Original(event))) => {
                    power_levels = RoomPowerLevelsSource::Original(event.content);
                }
                Ok(AnyStateEvent::RoomPowerLevels(StateEvent::Redacted(event))) => {
                    power_levels = RoomPowerLevelsSource::Redacted(event.content);
                }
                _ => {}
            }
        }
        let (version, creators) = match create {
            Some((sender, content)) => {
                let mut creators = vec![sender];
                creators.extend(content.additional_creators);
                (content.room_version, creators)
            }
            None => (RoomVersionId::V1, Vec::new()),
        };
        let rules = version
            .rules()
            .map_or(AuthorizationRules::V1, |rules| rules.authorization);
        let creators = if rules.additional_room_creators {
            creators
        } else {
            creators.into_iter().take(1).collect()
        };
        RoomPower {
            levels: RoomPowerLevels::new(power_levels, &rules, creators),
        }
    }

    /// `user`'s power.
    pub fn of(&self, user: &UserId) -> Power {
        match self.levels.for_user(user) {
            UserPowerLevel::Infinite => Power::Infinite,
            UserPowerLevel::Int(level) => Power::Value(level.into()),
            // A kind ruma adds later: no power it does not define is assumed.
            _ => Power::Value(0),
        }
    }
}

/// A rule matching Matrix user ids: an exact id (`@alice:example.org`), a glob
/// (`@ops-*:example.org`, `*:example.org`) or a bare server name (`example.org`, meaning every
/// user of that server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRule {
    /// Exactly this user.
    User(OwnedUserId),
    /// A glob over the whole user id, `*` and `?` wildcards.
    Glob(String),
}

impl UserRule {
    /// Whether `user` is matched by this rule.
    pub fn matches(&self, user: &UserId) -> bool {
        match self {
            UserRule::User(u) => u == user,
            UserRule::Glob(g) => glob_match(g, user.as_str()),
        }
    }
}

impl FromStr for UserRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty rule matches nobody; remove it or write \"*\"".into());
        }
        if s.contains(['*', '?']) {
            if s.contains(char::is_whitespace) {
                return Err(format!("{s:?}: a user rule cannot contain spaces"));
            }
            // `*:example.org` is shorthand for `@*:example.org`.
            let glob = if s.starts_with(['@', '*', '?']) {
                s.to_owned()
            } else {
                format!("@{s}")
            };
            return Ok(UserRule::Glob(glob));
        }
        if s.starts_with('@') {
            return UserId::parse(s)
                .map(UserRule::User)
                .map_err(|e| format!("{s:?} is not a valid user id: {e}"));
        }
        ruma::ServerName::parse(s)
            .map(|server| UserRule::Glob(format!("@*:{server}")))
            .map_err(|_| {
                format!(
                    "{s:?} is neither a user id (@user:server), a glob (*:server) nor a server name"
                )
            })
    }
}

impl<'de> Deserialize<'de> for UserRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for UserRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserRule::User(u) => f.write_str(u.as_str()),
            UserRule::Glob(g) => f.write_str(g),
        }
    }
}

/// Glob match where `*` is any run of characters and `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` and the text position it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The packs whose aliases a room may use. `*` means every pack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackFilter(Vec<String>);

impl PackFilter {
    /// Every pack.
    pub fn all() -> Self {
        PackFilter(vec!["*".into()])
    }

    /// Whether aliases of `pack` are allowed.
    pub fn allows(&self, pack: &str) -> bool {
        self.0.iter().any(|p| p == "*" || p == pack)
    }

    /// The packs, sorted (or `["*"]`).
    pub fn packs(&self) -> &[String] {
        &self.0
    }
}

impl FromStr for PackFilter {
    type Err = String;

    /// `*` or a comma-separated list of pack names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .try_into()
    }
}

impl TryFrom<Vec<String>> for PackFilter {
    type Error = String;

    fn try_from(packs: Vec<String>) -> Result<Self, Self::Error> {
        let mut packs: Vec<String> = packs
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        if packs.is_empty() {
            return Err("a pack list cannot be empty; use \"*\" for every pack".into());
        }
        if let Some(bad) = packs.iter().find(|p| {
            *p != "*"
                && !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(format!("{bad:?} is not a pack name"));
        }
        if packs.iter().any(|p| p == "*") {
            return Ok(PackFilter::all());
        }
        packs.sort();
        packs.dedup();
        Ok(PackFilter(packs))
    }
}

impl<'de> Deserialize<'de> for PackFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(d)?
            .try_into()
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for PackFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// A glob over alias refs (`pack.name`), as approval rules name the commands they cover:
/// `deploy.*`, `*.restart_*`, `ops.deploy`. `*` and `?` are the wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasGlob(String);

impl AliasGlob {
    /// Whether the alias `alias_ref` (`pack.name`) is covered.
    pub fn matches(&self, alias_ref: &str) -> bool {
        glob_match(&self.0, alias_ref)
    }
}

impl FromStr for AliasGlob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty alias pattern matches nothing; write e.g. \"deploy.*\"".into());
        }
        // Alias refs are `pack.name` with pack and name made of these; anything else (a space,
        // a regex) is a mistake that would silently match nothing, so it is refused.
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')))
        {
            return Err(format!(
                "{s:?} is not an alias pattern: {bad:?} cannot appear in one; write pack.name \
                 with * and ? as wildcards, e.g. \"deploy.*\""
            ));
        }
        if !s.contains(['.', '*']) {
            return Err(format!(
                "{s:?} is not an alias pattern: aliases are named pack.name; write \"{s}.*\" for \
                 every alias of the pack {s}"
            ));
        }
        Ok(AliasGlob(s.to_owned()))
    }
}

impl fmt::Display for AliasGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AliasGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Whether `user` (with `power` in the room) is matched by any of `rules`: the rules are
/// evaluated as grants by [`evaluate`], the code room rules go through, so `power>=N`,
/// globs and servers mean exactly what they mean in `[permissions]`.
pub fn any_rule_matches(rules: &[Rule], user: &UserId, power: Option<Power>) -> bool {
    let grants: Vec<Grant> = rules
        .iter()
        .map(|rule| Grant {
            rule: rule.clone(),
            level: Level::Run,
        })
        .collect();
    evaluate(&grants, user, power, Level::None) == Level::Run
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn glob_handles_backtracking() {
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("*:example.org", "@a:b:example.org"));
        assert!(!glob_match("a*b", "acbd"));
        assert!(glob_match("?b", "ab"));
        assert!(glob_match("**", ""));
    }

    fn grant(rule: &str, level: Level) -> Grant {
        Grant {
            rule: rule.parse().unwrap(),
            level,
        }
    }

    fn user(id: &str) -> ruma::OwnedUserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn levels_are_ordered_and_parse() {
        assert!(Level::None < Level::Help && Level::Help < Level::Run && Level::Run < Level::Admin);
        assert_eq!("RUN".parse::<Level>().unwrap(), Level::Run);
        assert!("root".parse::<Level>().is_err());
    }

    #[test]
    fn rules_parse_users_globs_servers_and_power() {
        assert_eq!("power>=50".parse::<Rule>().unwrap(), Rule::PowerAtLeast(50));
        assert!("power>=lots".parse::<Rule>().is_err());
        assert!(matches!(
            "*:example.org".parse::<Rule>().unwrap(),
            Rule::Users(_)
        ));
        assert_eq!(
            "power>=50".parse::<Rule>().unwrap().to_string(),
            "power>=50"
        );
    }

    #[test]
    fn deny_wins_otherwise_the_highest_grant_otherwise_the_default() {
        let grants = [
            grant("*:example.org", Level::Help),
            grant("@alice:example.org", Level::Run),
            grant("@mallory:example.org", Level::None),
        ];
        assert_eq!(
            evaluate(&grants, &user("@alice:example.org"), None, Level::None),
            Level::Run
        );
        assert_eq!(
            evaluate(&grants, &user("@bob:example.org"), None, Level::None),
            Level::Help
        );
        assert_eq!(
            evaluate(&grants, &user("@mallory:example.org"), None, Level::Run),
            Level::None
        );
        assert_eq!(
            evaluate(&grants, &user("@eve:other.org"), None, Level::Help),
            Level::Help
        );
    }

    #[test]
    fn power_rules_use_the_rooms_power_levels() {
        let grants = [grant("power>=50", Level::Run)];
        let moderator = Some(Power::Value(50));
        assert_eq!(
            evaluate(&grants, &user("@m:x"), moderator, Level::Help),
            Level::Run
        );
        assert_eq!(
            evaluate(&grants, &user("@u:x"), Some(Power::Value(0)), Level::Help),
            Level::Help
        );
        assert_eq!(
            evaluate(&grants, &user("@c:x"), Some(Power::Infinite), Level::Help),
            Level::Run
        );
        assert_eq!(
            evaluate(&grants, &user("@u:x"), None, Level::Help),
            Level::Help,
            "unknown power never matches"
        );
    }

    fn state(events: serde_json::Value) -> Vec<Raw<AnyStateEvent>> {
        events
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let mut event = event.clone();
                let fields = event.as_object_mut().unwrap();
                fields.insert("event_id".into(), json!(format!("$e{i}")));
                fields.insert("room_id".into(), json!("!r:x"));
                fields.insert("origin_server_ts".into(), json!(1));
                fields.entry("state_key").or_insert(json!(""));
                Raw::new(&event).unwrap().cast_unchecked()
            })
            .collect()
    }

    #[test]
    fn v12_creators_have_infinite_power_and_older_ones_do_not() {
        let room = |version: &str| {
            RoomPower::from_state(&state(json!([
                {"type": "m.room.create", "sender": "@creator:x", "content": {"room_version": version, "additional_creators": ["@co:x"]}},
                {"type": "m.room.power_levels", "sender": "@creator:x", "content": {"users": {"@mod:x": 50}, "users_default": 0}},
            ])))
        };
        let v12 = room("12");
        assert_eq!(v12.of(&user("@creator:x")), Power::Infinite);
        assert_eq!(v12.of(&user("@co:x")), Power::Infinite);
        assert_eq!(v12.of(&user("@mod:x")), Power::Value(50));
        assert_eq!(v12.of(&user("@nobody:x")), Power::Value(0));
        let v10 = room("10");
        assert_eq!(
            v10.of(&user("@creator:x")),
            Power::Value(0),
            "before v12 the creator is listed in users"
        );
        assert_eq!(v10.of(&user("@co:x")), Power::Value(0));
    }

    #[test]
    fn string_power_levels_of_older_rooms_count() {
        let room = RoomPower::from_state(&state(json!([
            {"type": "m.room.create", "sender": "@creator:x", "content": {"room_version": "5"}},
            {"type": "m.room.power_levels", "sender": "@creator:x", "content": {"users": {"@mod:x": "50"}, "users_default": "10"}},
        ])));
        assert_eq!(room.of(&user("@mod:x")), Power::Value(50));
        assert_eq!(room.of(&user("@nobody:x")), Power::Value(10));
    }

    #[test]
    fn without_power_levels_the_creator_has_100() {
        let room = RoomPower::from_state(&state(json!([
            {"type": "m.room.create", "sender": "@creator:x", "content": {"room_version": "10"}},
            {"type": "m.room.member", "sender": "@creator:x", "state_key": "@creator:x", "content": {"membership": "join"}},
        ])));
        assert_eq!(room.of(&user("@creator:x")), Power::Value(100));
        assert_eq!(room.of(&user("@other:x")), Power::Value(0));
    }

    #[test]
    fn alias_globs_match_refs_and_refuse_what_cannot_be_one() {
        let glob: AliasGlob = "deploy.*".parse().unwrap();
        assert!(glob.matches("deploy.web") && !glob.matches("ops.deploy"));
        assert!(
            "*.restart_?"
                .parse::<AliasGlob>()
                .unwrap()
                .matches("ops.restart_a")
        );
        assert!(
            "ops.deploy"
                .parse::<AliasGlob>()
                .unwrap()
                .matches("ops.deploy")
        );
        assert!("".parse::<AliasGlob>().unwrap_err().contains("empty"));
        assert!(
            "deploy web"
                .parse::<AliasGlob>()
                .unwrap_err()
                .contains("' '")
        );
        assert!(
            "deploy"
                .parse::<AliasGlob>()
                .unwrap_err()
                .contains("deploy.*")
        );
        assert!("^deploy\\..*$".parse::<AliasGlob>().is_err());
    }

    #[test]
    fn approver_rules_match_as_room_rules_do() {
        let rules: Vec<Rule> = vec!["power>=50".parse().unwrap(), "@carol:x".parse().unwrap()];
        let bob = UserId::parse("@bob:x").unwrap();
        let carol = UserId::parse("@carol:x").unwrap();
        assert!(any_rule_matches(&rules, &bob, Some(Power::Value(50))));
        assert!(any_rule_matches(&rules, &bob, Some(Power::Infinite)));
        assert!(!any_rule_matches(&rules, &bob, Some(Power::Value(49))));
        assert!(
            !any_rule_matches(&rules, &bob, None),
            "unknown power never matches"
        );
        assert!(any_rule_matches(&rules, &carol, None));
        assert!(any_rule_matches(&["*:x".parse().unwrap()], &bob, None));
        assert!(!any_rule_matches(&[], &bob, Some(Power::Infinite)));
    }
}
