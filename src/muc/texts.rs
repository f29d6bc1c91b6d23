//! What rooms say to people, in French (the ENT's language, the default body) and English.

pub const SERVICE_NAME: &str = "Conversations";

/// A localised text: French first (the body without `xml:lang`), then English.
pub struct Text {
    pub french: &'static str,
    pub english: &'static str,
}

/// The manual's message when a conversation is created.
pub const LOCKED: Text = Text {
    french: "Le salon de discussion est verrouillé, entrée impossible jusqu'à ce que la \
             configuration soit déverrouillée",
    english: "This conversation is locked: nobody can enter until its configuration is \
              confirmed",
};

/// The manual's message once the creator has confirmed the configuration.
pub const UNLOCKED: Text = Text {
    french: "Le salon de discussion est maintenant déverrouillé",
    english: "This conversation is now unlocked",
};

pub const NEVER_CONFIGURED: &str = "the conversation was never configured and has been closed / la conversation n'a jamais \
     été configurée et a été fermée";
pub const TOO_MANY_ROOMS: &str = "you own as many conversations as you may: destroy one first";
pub const OWNS_TOO_MANY: &str =
    "this person owns as many conversations as allowed and cannot own another";
pub const LOCKED_ERROR: &str =
    "this conversation is locked until its creator confirms its configuration";
pub const MEMBERS_ONLY: &str =
    "this conversation is open to its members only: ask for an invitation";
pub const BANNED: &str = "you are banned from this conversation";
pub const FULL: &str = "this conversation has as many participants as it may";
pub const NOT_OCCUPANT: &str = "you are not in this conversation";
pub const NICK_TAKEN: &str = "this nickname is taken in this conversation";
pub const NICK_EMPTY: &str = "a nickname is needed to join: address room@service/nickname";
pub const NICK_FIXED: &str =
    "your name in conversations is your name in the ENT directory and cannot be changed";
pub const VISITOR: &str = "you have no voice in this moderated conversation";
pub const SUBJECT_FORBIDDEN: &str = "only moderators may change the subject of this conversation";
pub const INVITE_FORBIDDEN: &str = "only moderators may invite in this conversation";
pub const KICK_FORBIDDEN: &str = "only the creator of the conversation may remove participants";
pub const NOT_MODERATOR: &str = "only moderators may do this";
pub const NOT_OWNER: &str = "only the conversation's owners may do this";
pub const PM_FORBIDDEN: &str = "private messages are not allowed in this conversation";
pub const NO_SUCH_NICK: &str = "nobody in this conversation has this nickname";
pub const LAST_OWNER: &str = "a conversation keeps at least one owner";
pub const TOO_MANY_AFFILIATIONS: &str = "this conversation has as many members as it may";
pub const OUTSIDERS: &str = "only users of this server take part in conversations";
