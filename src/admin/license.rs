//! Licenses: install one, show one.

use bytes::Bytes;
use spectrum_replication::{AckLevel, WriteBatch};
use tracing::info;

use super::{Admin, AdminError};
use crate::license::{self, Date, License};
use crate::model::{LicenseInfo, LicenseInstalled, ReadAfter};
use crate::namespace::{self, Namespace};

impl Admin {
    /// Installs the license `document` under `name` (`main` when empty).
    ///
    /// # Errors
    ///
    /// [`AdminError::License`] naming the bad field, or for an expired license;
    /// [`AdminError::Key`] for a bad name.
    pub async fn set_license(
        &self,
        name: &str,
        document: Bytes,
        ack: AckLevel,
    ) -> Result<LicenseInstalled, AdminError> {
        let name = license_name(name);
        namespace::validate_name(Namespace::License, name)?;
        let license = License::from_json_bytes(&document)?;
        let today = Date::today();
        license.check_current(today)?;
        let write = self.write(WriteBatch::new().put(Namespace::License.key(name), document), ack).await?;
        info!(license = name, expires = %license.expires, "license installed");
        Ok(LicenseInstalled { license: info_of(name, &license, &write.version, today), write })
    }

    /// The license `name` (`main` when empty), once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`]; [`AdminError::StoredInvalid`] when the stored
    /// document no longer decodes.
    pub async fn license(&self, name: &str, after: &ReadAfter) -> Result<LicenseInfo, AdminError> {
        let name = license_name(name);
        namespace::validate_name(Namespace::License, name)?;
        self.wait_for(after).await?;
        let record = self.live(&Namespace::License.key(name)).await?.ok_or_else(|| {
            AdminError::not_found(format!("no license {name:?} is installed; install one with `spectrum license set` (SetLicense, or PUT /api/v1/licenses/{name})"))
        })?;
        let license = License::from_json_bytes(record.value.as_deref().unwrap_or_default()).map_err(|e| {
            AdminError::StoredInvalid { what: format!("license {name:?}"), reason: e.to_string() }
        })?;
        Ok(info_of(name, &license, &record.token(), Date::today()))
    }
}

fn license_name(name: &str) -> &str {
    if name.is_empty() { license::DEFAULT_NAME } else { name }
}

fn info_of(
    name: &str,
    license: &License,
    version: &spectrum_replication::VersionToken,
    today: Date,
) -> LicenseInfo {
    let days_left = license.days_left(today);
    LicenseInfo {
        name: name.to_owned(),
        owner: license.owner.clone(),
        seats: license.seats,
        expires: license.expires.to_string(),
        days_left,
        expired: days_left < 0,
        version: version.clone(),
        document: serde_json::to_vec(&license.document).unwrap_or_default(),
    }
}
