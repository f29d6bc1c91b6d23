//! The `urn:causette:categories:0` IQ extension (docs/extensions.md): what plain roster groups
//! cannot do for the ENT window — list categories with their contact counts, create an empty
//! category, rename one (every contact moves) and delete one (its contacts move to the
//! fallback category). Each operation is one store transaction; changed items are pushed.

use std::collections::BTreeMap;

use minidom::Element;
use xmpp_parsers::stanza_error::DefinedCondition;
use xso::{AsXml, FromXml};

use crate::im::Context;
use crate::im::roster::{check_category_name, local};
use crate::reply::Answer;
use crate::router::Sender;
use crate::storage;

pub const NS: &str = "urn:causette:categories:0";

/// An operation on categories (IQ set).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS)]
pub enum CategoryOp {
    #[xml(name = "create")]
    Create {
        #[xml(attribute)]
        name: String,
    },
    #[xml(name = "rename")]
    Rename {
        #[xml(attribute)]
        from: String,
        #[xml(attribute)]
        to: String,
    },
    #[xml(name = "delete")]
    Delete {
        #[xml(attribute)]
        name: String,
    },
}

/// The query element: empty in a get, one operation in a set.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS, name = "query")]
pub struct CategoriesQuery {
    #[xml(child(default))]
    pub op: Option<CategoryOp>,
    #[xml(child(n = ..))]
    pub categories: Vec<Category>,
}

/// One category in a list, with how many contacts it holds.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS, name = "category")]
pub struct Category {
    #[xml(attribute)]
    pub name: String,
    #[xml(attribute)]
    pub count: usize,
}

fn failed(err: &storage::Error) -> (DefinedCondition, &'static str) {
    match err {
        storage::Error::NotFound => (DefinedCondition::ItemNotFound, "no such category"),
        storage::Error::Conflict => (
            DefinedCondition::Conflict,
            "a category with that name already exists",
        ),
        _ => (
            DefinedCondition::InternalServerError,
            "the change could not be saved; try again",
        ),
    }
}

pub async fn handle_iq(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    is_get: bool,
    payload: &Element,
) -> Answer {
    let user = sender.jid.to_bare();
    let Ok(query) = CategoriesQuery::try_from(payload.clone()) else {
        return Err((DefinedCondition::BadRequest, "malformed categories query").into());
    };
    if is_get {
        if query.op.is_some() {
            return Err((
                DefinedCondition::BadRequest,
                "a get lists categories; use a set to change them",
            )
                .into());
        }
        let snapshot = cx
            .rosters
            .snapshot(cx, &user)
            .await
            .map_err(|e| failed(&e))?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for item in &snapshot.items {
            for group in &item.groups {
                *counts.entry(group.clone()).or_default() += 1;
            }
        }
        for empty in snapshot.empty_categories {
            counts.entry(empty).or_default();
        }
        let categories = counts
            .into_iter()
            .map(|(name, count)| Category { name, count })
            .collect();
        return Ok(Some(
            CategoriesQuery {
                op: None,
                categories,
            }
            .into(),
        ));
    }
    let Some(op) = query.op else {
        return Err((
            DefinedCondition::BadRequest,
            "a set needs one of create, rename or delete",
        )
            .into());
    };
    let username = local(&user);
    let _guard = cx.rosters.lock(&user).await;
    match op {
        CategoryOp::Create { name } => {
            let name = name.trim().to_owned();
            check_category_name(cx.config, &name)?;
            let max = cx.config.max_categories;
            if cx
                .rosters
                .categories(&user)
                .is_some_and(|existing| !existing.contains(&name) && existing.len() >= max)
            {
                return Err((
                    DefinedCondition::NotAllowed,
                    "too many categories: delete one first",
                )
                    .into());
            }
            let version = cx
                .store
                .create_category(username, &name)
                .await
                .map_err(|e| failed(&e))?;
            cx.rosters
                .categories_changed(cx, &user, version, Vec::new(), |empty| {
                    empty.insert(name);
                })
                .await;
        }
        CategoryOp::Rename { from, to } => {
            let to = to.trim().to_owned();
            check_category_name(cx.config, &to)?;
            let (version, changed) = cx
                .store
                .rename_category(username, &from, &to)
                .await
                .map_err(|e| failed(&e))?;
            cx.rosters
                .categories_changed(cx, &user, version, changed, |empty| {
                    if empty.remove(&from) {
                        empty.insert(to);
                    }
                })
                .await;
        }
        CategoryOp::Delete { name } => {
            let fallback = cx.config.fallback_category.trim().to_owned();
            if name == fallback && fallback_in_use(cx, &user).await {
                return Err((
                    DefinedCondition::NotAllowed,
                    "the fallback category cannot be deleted while it holds contacts",
                )
                    .into());
            }
            let (version, changed) = cx
                .store
                .delete_category(username, &name, &fallback)
                .await
                .map_err(|e| failed(&e))?;
            cx.rosters
                .categories_changed(cx, &user, version, changed, |empty| {
                    empty.remove(&name);
                })
                .await;
        }
    }
    Ok(None)
}

async fn fallback_in_use(cx: &Context<'_>, user: &jid::BareJid) -> bool {
    let fallback = &cx.config.fallback_category;
    cx.rosters
        .snapshot(cx, user)
        .await
        .is_ok_and(|s| s.items.iter().any(|i| i.groups.contains(fallback)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip() {
        for xml in [
            "<query xmlns='urn:causette:categories:0'><create name='Projet'/></query>",
            "<query xmlns='urn:causette:categories:0'><rename from='A' to='B'/></query>",
            "<query xmlns='urn:causette:categories:0'><delete name='B'/></query>",
            "<query xmlns='urn:causette:categories:0'><category name='6e B' count='3'/></query>",
        ] {
            let element: Element = xml.parse().unwrap();
            let query = CategoriesQuery::try_from(element.clone()).unwrap();
            assert_eq!(Element::from(query.clone()), element);
        }
        let bad: Element = "<query xmlns='urn:causette:categories:0'><explode/></query>"
            .parse()
            .unwrap();
        // An unknown operation is no operation: the handler answers bad-request.
        assert_eq!(CategoriesQuery::try_from(bad).unwrap().op, None);
    }
}
