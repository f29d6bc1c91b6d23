//! A room's configuration and its form (XEP-0045 §10.2, the `muc#roomconfig` fields): what
//! an owner is shown, and what a submitted form may change.

use serde::{Deserialize, Serialize};
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType, Option_};

use crate::config::{RoomDefaults, RoomsConfig};

pub const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";

/// Who may send private messages to occupants (`muc#roomconfig_allowpm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowPm {
    Anyone,
    Participants,
    Moderators,
    None,
}

impl AllowPm {
    pub const ALL: [AllowPm; 4] = [
        AllowPm::Anyone,
        AllowPm::Participants,
        AllowPm::Moderators,
        AllowPm::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AllowPm::Anyone => "anyone",
            AllowPm::Participants => "participants",
            AllowPm::Moderators => "moderators",
            AllowPm::None => "none",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// A room's configuration, kept as JSON in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub public: bool,
    pub persistent: bool,
    pub members_only: bool,
    pub moderated: bool,
    pub allow_invites: bool,
    pub change_subject: bool,
    /// Occupants see each other's real JIDs (`whois` = anyone), else only moderators do.
    pub real_jids_visible: bool,
    pub allow_pm: AllowPm,
    /// Occupants admitted at once.
    pub max_users: usize,
    /// Messages of history sent on join.
    pub history_length: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self::new(&RoomDefaults::default(), &RoomsConfig::default())
    }
}

/// Why a submitted form is refused: the text of a `<bad-request/>` or `<not-acceptable/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl RoomConfig {
    pub fn new(defaults: &RoomDefaults, limits: &RoomsConfig) -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            public: defaults.public,
            persistent: defaults.persistent,
            members_only: defaults.members_only,
            moderated: defaults.moderated,
            allow_invites: defaults.allow_invites,
            change_subject: defaults.change_subject,
            real_jids_visible: defaults.real_jids_visible,
            allow_pm: AllowPm::parse(&defaults.allow_private_messages).unwrap_or(AllowPm::Anyone),
            max_users: limits.max_occupants,
            history_length: defaults.history_length.min(limits.max_history),
        }
    }

    /// The form an owner fills in (`muc#owner` get).
    pub fn form(&self, limits: &RoomsConfig) -> DataForm {
        let boolean = |var: &str, label: &str, value: bool| {
            let mut field =
                Field::new(var, FieldType::Boolean).with_value(if value { "1" } else { "0" });
            field.label = Some(label.into());
            field
        };
        let text = |var: &str, label: &str, value: &str| {
            let mut field = Field::text_single(var, value);
            field.label = Some(label.into());
            field
        };
        let list = |var: &str, label: &str, value: &str, options: Vec<String>| {
            let mut field = Field::new(var, FieldType::ListSingle).with_value(value);
            field.label = Some(label.into());
            field.options = options
                .into_iter()
                .map(|value| Option_ { label: None, value })
                .collect();
            field
        };
        let mut form = DataForm::new(
            DataFormType::Form,
            ROOMCONFIG,
            vec![
                text("muc#roomconfig_roomname", "Name", &self.name),
                text("muc#roomconfig_roomdesc", "Description", &self.description),
                boolean(
                    "muc#roomconfig_persistentroom",
                    "Persistent",
                    self.persistent,
                ),
                boolean(
                    "muc#roomconfig_publicroom",
                    "Listed in the public directory",
                    self.public,
                ),
                boolean(
                    "muc#roomconfig_membersonly",
                    "Members only",
                    self.members_only,
                ),
                boolean("muc#roomconfig_moderatedroom", "Moderated", self.moderated),
                boolean(
                    "muc#roomconfig_allowinvites",
                    "Occupants may invite",
                    self.allow_invites,
                ),
                boolean(
                    "muc#roomconfig_changesubject",
                    "Occupants may change the subject",
                    self.change_subject,
                ),
                list(
                    "muc#roomconfig_whois",
                    "Who sees real JIDs",
                    if self.real_jids_visible {
                        "anyone"
                    } else {
                        "moderators"
                    },
                    vec!["moderators".into(), "anyone".into()],
                ),
                list(
                    "muc#roomconfig_allowpm",
                    "Who may send private messages",
                    self.allow_pm.as_str(),
                    AllowPm::ALL.iter().map(|a| a.as_str().to_owned()).collect(),
                ),
                list(
                    "muc#roomconfig_maxusers",
                    "Most occupants",
                    &self.max_users.to_string(),
                    [2, 10, 30, 50, 100, 200, 500, 1000]
                        .into_iter()
                        .filter(|n| *n < limits.max_occupants)
                        .chain([limits.max_occupants])
                        .map(|n| n.to_string())
                        .collect(),
                ),
                text(
                    "muc#maxhistoryfetch",
                    "Messages of history sent on join",
                    &self.history_length.to_string(),
                ),
                boolean(
                    "muc#roomconfig_passwordprotectedroom",
                    "Password protected (not offered)",
                    false,
                ),
            ],
        );
        form.title = Some("Configuration de la conversation / Conversation configuration".into());
        form
    }

    /// The configuration a submitted form asks for. Fields it leaves out keep their value;
    /// an unknown field or an invalid value refuses the whole form (nothing changes).
    pub fn apply(&self, form: &DataForm, limits: &RoomsConfig) -> Result<RoomConfig, Invalid> {
        if form.type_ != DataFormType::Submit {
            return Err(Invalid("the configuration must be a submitted form".into()));
        }
        if form.form_type().is_some_and(|t| t != ROOMCONFIG) {
            return Err(Invalid(format!(
                "the form's FORM_TYPE must be {ROOMCONFIG}"
            )));
        }
        let mut next = self.clone();
        for field in &form.fields {
            let Some(var) = field.var.as_deref() else {
                continue;
            };
            if var == "FORM_TYPE" {
                continue;
            }
            let value = field.values.first().map(String::as_str).unwrap_or("");
            let boolean = || match value {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                other => Err(Invalid(format!("{var}: {other:?} is not a boolean"))),
            };
            let bounded_text = |max: usize| {
                let text = value.trim();
                if text.chars().count() > max {
                    Err(Invalid(format!("{var}: longer than {max} characters")))
                } else if text.chars().any(char::is_control) {
                    Err(Invalid(format!(
                        "{var}: control characters are not allowed"
                    )))
                } else {
                    Ok(text.to_owned())
                }
            };
            match var {
                "muc#roomconfig_roomname" => next.name = bounded_text(limits.max_name_chars)?,
                "muc#roomconfig_roomdesc" => {
                    next.description = bounded_text(limits.max_description_chars)?
                }
                "muc#roomconfig_persistentroom" => next.persistent = boolean()?,
                "muc#roomconfig_publicroom" => next.public = boolean()?,
                "muc#roomconfig_membersonly" => next.members_only = boolean()?,
                "muc#roomconfig_moderatedroom" => next.moderated = boolean()?,
                "muc#roomconfig_allowinvites" => next.allow_invites = boolean()?,
                "muc#roomconfig_changesubject" => next.change_subject = boolean()?,
                "muc#roomconfig_whois" => {
                    next.real_jids_visible = match value {
                        "anyone" => true,
                        "moderators" => false,
                        other => {
                            return Err(Invalid(format!(
                                "{var}: {other:?} is not one of moderators, anyone"
                            )));
                        }
                    }
                }
                "muc#roomconfig_allowpm" => {
                    next.allow_pm = AllowPm::parse(value).ok_or_else(|| {
                        Invalid(format!(
                            "{var}: {value:?} is not one of anyone, participants, moderators, none"
                        ))
                    })?
                }
                "muc#roomconfig_maxusers" => {
                    next.max_users = match value.parse::<usize>() {
                        Ok(n) if (2..=limits.max_occupants).contains(&n) => n,
                        _ => {
                            return Err(Invalid(format!(
                                "{var}: must be a number from 2 to {}",
                                limits.max_occupants
                            )));
                        }
                    }
                }
                "muc#maxhistoryfetch" => {
                    next.history_length = match value.parse::<usize>() {
                        Ok(n) if n <= limits.max_history => n,
                        _ => {
                            return Err(Invalid(format!(
                                "{var}: must be a number from 0 to {}",
                                limits.max_history
                            )));
                        }
                    }
                }
                "muc#roomconfig_passwordprotectedroom" => {
                    if boolean()? {
                        return Err(Invalid(
                            "password-protected rooms are not offered: use a members-only room"
                                .into(),
                        ));
                    }
                }
                other => return Err(Invalid(format!("unknown field {other}"))),
            }
        }
        Ok(next)
    }

    /// The room information form of disco#info (XEP-0045 §15.5.4).
    pub fn info_form(&self, subject: &str, occupants: usize) -> DataForm {
        DataForm::new(
            DataFormType::Result_,
            ROOMINFO,
            vec![
                Field::text_single("muc#roominfo_description", &self.description),
                Field::text_single("muc#roominfo_subject", subject),
                Field::text_single("muc#roominfo_occupants", &occupants.to_string()),
                Field::text_single("muc#roomconfig_roomname", &self.name),
                Field::text_single(
                    "muc#roomconfig_allowinvites",
                    if self.allow_invites { "1" } else { "0" },
                ),
                Field::text_single(
                    "muc#roomconfig_changesubject",
                    if self.change_subject { "1" } else { "0" },
                ),
                Field::text_single("muc#maxhistoryfetch", &self.history_length.to_string()),
            ],
        )
    }

    /// The disco#info features that describe this configuration (XEP-0045 §6.4).
    pub fn features(&self) -> [&'static str; 5] {
        [
            if self.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if self.public {
                "muc_public"
            } else {
                "muc_hidden"
            },
            if self.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if self.real_jids_visible {
                "muc_nonanonymous"
            } else {
                "muc_semianonymous"
            },
            if self.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(fields: &[(&str, &str)]) -> DataForm {
        DataForm::new(
            DataFormType::Submit,
            ROOMCONFIG,
            fields
                .iter()
                .map(|(var, value)| Field::text_single(var, value))
                .collect(),
        )
    }

    #[test]
    fn a_form_changes_what_it_names_and_keeps_the_rest() {
        let limits = RoomsConfig::default();
        let config = RoomConfig::new(&limits.defaults, &limits);
        let next = config
            .apply(
                &submit(&[
                    ("muc#roomconfig_roomname", " Sortie au musée "),
                    ("muc#roomconfig_publicroom", "1"),
                    ("muc#roomconfig_whois", "moderators"),
                    ("muc#roomconfig_maxusers", "30"),
                ]),
                &limits,
            )
            .unwrap();
        assert_eq!(next.name, "Sortie au musée");
        assert!(next.public && !next.real_jids_visible && next.members_only);
        assert_eq!(next.max_users, 30);
        // The form shown carries the values back.
        let form = next.form(&limits);
        assert!(form.fields.iter().any(|f| {
            f.var.as_deref() == Some("muc#roomconfig_roomname") && f.values == ["Sortie au musée"]
        }));
    }

    #[test]
    fn unknown_fields_and_bad_values_refuse_the_whole_form() {
        let limits = RoomsConfig::default();
        let config = RoomConfig::default();
        for fields in [
            &[("muc#roomconfig_unknown", "1")][..],
            &[("muc#roomconfig_publicroom", "yes")],
            &[("muc#roomconfig_maxusers", "100000")],
            &[("muc#roomconfig_maxusers", "1")],
            &[("muc#maxhistoryfetch", "-1")],
            &[("muc#roomconfig_whois", "everyone")],
            &[("muc#roomconfig_passwordprotectedroom", "1")],
            &[("muc#roomconfig_roomname", "a\u{7}b")],
        ] {
            let err = config.apply(&submit(fields), &limits).unwrap_err();
            assert!(!err.0.is_empty(), "{fields:?}");
        }
        let long = "x".repeat(limits.max_name_chars + 1);
        assert!(
            config
                .apply(&submit(&[("muc#roomconfig_roomname", &long)]), &limits)
                .is_err()
        );
        let mut form = submit(&[]);
        form.type_ = DataFormType::Form;
        assert!(config.apply(&form, &limits).is_err());
    }
}
