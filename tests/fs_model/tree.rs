//! A whole directory tree as the model compares it: per path its type,
//! permissions, owner, link count, size, contents or symlink target, and
//! `user.` attributes, plus which paths name one file (hard links), without
//! inode numbers or times.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::world::{c_path, get_xattr, list_xattrs, lstat, read_dir, Errno, Meta};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub meta: Meta,
    /// File contents, or a symlink's target.
    pub content: Option<Vec<u8>>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<String, Entry>,
    /// Sets of two or more paths naming one file, sorted.
    pub hard_links: Vec<Vec<String>>,
}

impl Tree {
    pub fn read(root: &Path) -> Result<Self, String> {
        let mut tree = Tree { entries: BTreeMap::new(), hard_links: Vec::new() };
        let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
        tree.walk(root, "", &mut inodes).map_err(|(path, errno)| format!("reading {path} of {}: {errno:?}", root.display()))?;
        let mut hard_links: Vec<Vec<String>> = inodes.into_values().filter(|paths| paths.len() > 1).collect();
        hard_links.iter_mut().for_each(|paths| paths.sort());
        hard_links.sort();
        tree.hard_links = hard_links;
        Ok(tree)
    }

    fn walk(&mut self, root: &Path, dir: &str, inodes: &mut HashMap<u64, Vec<String>>) -> Result<(), (String, Errno)> {
        for name in read_dir(&root.join(dir)).map_err(|errno| (dir.to_owned(), errno))? {
            let relative = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            let full = root.join(&relative);
            let failed = |errno| (relative.clone(), errno);
            let st = lstat(&full).map_err(failed)?;
            let meta = Meta::of(&st);
            let content = match meta.file_type {
                libc::S_IFREG => Some(std::fs::read(&full).map_err(|err| failed(Errno(err.raw_os_error().unwrap_or(libc::EIO))))?),
                libc::S_IFLNK => Some(
                    std::fs::read_link(&full)
                        .map_err(|err| failed(Errno(err.raw_os_error().unwrap_or(libc::EIO))))?
                        .into_os_string()
                        .into_encoded_bytes(),
                ),
                _ => None,
            };
            let path = c_path(&full);
            let mut xattrs = BTreeMap::new();
            for name in list_xattrs(&path).map_err(failed)? {
                let value = get_xattr(&path, &name).map_err(failed)?;
                xattrs.insert(name, value);
            }
            let is_dir = meta.file_type == libc::S_IFDIR;
            if !is_dir {
                inodes.entry(st.st_ino).or_default().push(relative.clone());
            }
            self.entries.insert(relative.clone(), Entry { meta, content, xattrs });
            if is_dir {
                self.walk(root, &relative, inodes)?;
            }
        }
        Ok(())
    }

    /// What differs, path by path, for a failure message.
    pub fn differences(&self, other: &Tree) -> Vec<String> {
        let mut found = Vec::new();
        for (path, entry) in &self.entries {
            match other.entries.get(path) {
                None => found.push(format!("{path}: only in the reference: {entry:?}")),
                Some(theirs) if theirs != entry => found.push(format!("{path}:\n  reference {entry:?}\n  share     {theirs:?}")),
                Some(_) => {}
            }
        }
        for (path, entry) in &other.entries {
            if !self.entries.contains_key(path) {
                found.push(format!("{path}: only in the share: {entry:?}"));
            }
        }
        if self.hard_links != other.hard_links {
            found.push(format!("hard links: reference {:?}, share {:?}", self.hard_links, other.hard_links));
        }
        found
    }
}
