"""IKEv1 keying (RFC 2409 section 5 and Appendix B) against charon's own numbers.

Each CharonVector was recorded by tests/support/charon_v1_vectors.py: two strongSwan
5.9.8 charons (``version = 1``, Main Mode, then one Quick Mode) in network namespaces,
logging at ike = 4 and chd = 4, and dumpcap between them. Outputs come from the
initiator's log lines (``SKEYID``, ``SKEYID_d``/``_a``/``_e``, ``encryption key Ka``,
``initial IV``, ``next IV for MID <id>``, ``HASH_I``, ``Hash(1)``/``(2)``/``(3)``, the
``encryption``/``integrity initiator``/``responder key`` lines) and the responder logged
the same phase 1 keys; inputs come from the log (``shared Diffie Hellman secret`` =
g^xy, ``HASH_I data`` = g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b, ``DH secret`` =
g(qm)^xy, the ``SA seed`` lines = protocol | SPI | Ni_b | Nr_b) and from the capture
(cookies, Main Mode KE and Nonce bodies; messages 5 and 6, the Quick Mode messages and
the informational Deletes as sent). Run the script again to make new ones; these
tests only read the bytes.

The cases: PSK with aes128-sha256-modp2048 (and PFS with modp2048 in Quick Mode),
PSK with aes128-sha256-ecp256, ECDSA-256 certificates with aes128-sha1-modp2048
(signature SKEYID, and a HASH_I prf that is not the proposal's), and PSK with
aes256-sha1-modp2048 (a 20-byte SKEYID_e expanded to a 32-byte key, Appendix B).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vpnfleet.agent.ike.constants import EncrId, IntegId
from vpnfleet.agent.ike.transforms import Encr, encr_for, integ_for
from vpnfleet.agent.ike.v1 import keys
from vpnfleet.agent.ike.v1.cipher import IkeV1Cipher
from vpnfleet.agent.ike.v1.constants import AuthMethod, ExchangeType, P1Hash, PayloadType
from vpnfleet.agent.ike.v1.message import ISAKMP_HEADER_LENGTH, IsakmpHeader
from vpnfleet.agent.ike.v1.payloads import split_payloads


@dataclass(frozen=True)
class CharonVector:
    case: str
    ike: str
    esp: str
    hash_id: int
    """RFC 2409 Appendix A Hash Algorithm of the proposal."""
    key_bits: int
    auth_method: int
    """1 pre-shared key, 9 ECDSA with SHA-256 on P-256 (RFC 4754)."""
    psk: bytes | None
    icookie: bytes
    rcookie: bytes
    ni: bytes
    nr: bytes
    g_xi: bytes
    g_xr: bytes
    g_xy: bytes
    sa_i_body: bytes
    idii_body: bytes
    skeyid: bytes
    skeyid_d: bytes
    skeyid_a: bytes
    skeyid_e: bytes
    enc_key: bytes
    iv0: bytes
    hash_i: bytes
    main_mode_5: bytes
    main_mode_6: bytes
    qm_message_id: int
    qm_iv: bytes
    """``next IV for MID <id>``: the Quick Mode chain's first IV."""
    quick_mode: tuple[bytes, bytes, bytes]
    informational: tuple[bytes, ...]
    """The Deletes the initiator sent when told to terminate, one exchange each."""
    qm_hash1: bytes
    qm_hash2: bytes
    qm_hash3: bytes
    g_qm: bytes | None
    protocol: int
    spi_r: bytes
    """The responder's ESP SPI: it keys the initiator-to-responder SA."""
    spi_i: bytes
    qm_ni: bytes
    qm_nr: bytes
    esp_encr_i: bytes
    esp_integ_i: bytes
    esp_encr_r: bytes
    esp_integ_r: bytes

    def __str__(self) -> str:
        return self.case


VECTORS = [
    CharonVector(
        case="psk-aes128-sha256-modp2048",
        ike="aes128-sha256-modp2048",
        esp="aes128-sha256-modp2048",
        hash_id=4,
        key_bits=128,
        auth_method=1,
        psk=b"vpnfleet IKEv1 vector pre-shared key",
        icookie=bytes.fromhex("b6cb63c3f9213e34"),
        rcookie=bytes.fromhex("9f42de1568be7cea"),
        ni=bytes.fromhex("cf98ef9ccd19997a430fbcb0eba8215fd4ff71053c0c6839ac2d405b6fab9ea9"),
        nr=bytes.fromhex("38fcd80d45b632e8846901245a9bdec6cefe46ee29c5e0bc3aedd21c2ac76a1c"),
        g_xi=bytes.fromhex(
            "c053f04197f9e8049e4e7d01c9e1837ff3b8f71588f5b338e69feac043789c5b"
            "202afb1b842ffbc2daf8009dcd05d6570a78fc9f4d7a24cbe1b470c1921a6fec"
            "5728a23f6d374c19622dbecfcd66fc5d2bbd5edf9fd4a4fad3dbe78234e5f426"
            "a9c68ab9b459036cf318a7b2df4a43326ccb9856397490b6f2d4c15bab72c57f"
            "9f63976f1cf5ef7b2459f82b37b82fddf7b16ba8ea288fe636641b695cc7e630"
            "8a30ca5b0f7706708ec56bd41e1b4d9b7a780bfa8abe5b27dd5c30614d85ff66"
            "6fd526fac5501348187bbc174029ea7034319c7db35e40dda195ae0af262cf40"
            "1e4d832afa619be68946674dde3b96a3ab76b83f34261862fa960e03cfb4b871"
        ),
        g_xr=bytes.fromhex(
            "d0cd2a96c281de665d09527531e6d1c2ef589af35a59178c4ce5cd7647f2b936"
            "50bde03b7ef23623c2b674ccc9bfb6cf773c63971ff28edee88c4e0cb8232712"
            "b9a1002d8c6fbebbc9111a5caab33fc1995482c6e3c13cda3e5b25e3d05bb338"
            "da7e6f9919fe031af5f6f3d0690c3f79aff94dc7226785e210215e8bfe66075c"
            "b27078e0955ef9de90c5fe69f9be88e43b01bb007a79fe9752c4243a8b65e2c8"
            "3ecec6a46d13af5694f7fee8e6584332bb882d0b8ff05a07d34f685df516f417"
            "5a309887ed12fbe83ebb4f4af1769618ea6cffd79286cc3069c3561d8e97774f"
            "25fc9850c2bb77e4752f410001aee6fcf81e13a88cdb0e3dfb80039dd14fb976"
        ),
        g_xy=bytes.fromhex(
            "295848e34026b9402349c526dffaae1eb8d79315fc3262e0e776e4be864f14d9"
            "32c30c9ab7009d77237ca34ee5753d9aa4e513e10a1e1c44a759be1039799bf2"
            "84902047a6483a04bee13271f95436b447eb14eea41a73366901bf830d94a515"
            "7b3a630b6fcd4ecc76d1bf78a5830ba1eb64d50355283600888e6e1c49898f89"
            "34a13f4a07711983ded76149f3fc596fcc991c0d03b6df4516e3b73e7ca7f9dc"
            "9c36ebea6b5642b36a7cad60863b448ef26d2e37a0a04ed2d5c6177d94143a9d"
            "930bcf20f0d6e0e864729790492a84f0b35b57a8b349eed5fd73b0622aea6b67"
            "504af14704a6cc4a184f7f89755f2e7d2d566d3c06c58ab2104a10815ae2ab15"
        ),
        sa_i_body=bytes.fromhex(
            "00000001000000010000002c01010001000000240101000080010007800e0080"
            "800200048004000e80030001800b0001800c0000"
        ),
        idii_body=bytes.fromhex("020000006d6f6f6e2e6578616d706c65"),
        skeyid=bytes.fromhex("667a1a0faddc5ae63d974e6ea1a238004525e9eba781f24dfbedd2ae2a815971"),
        skeyid_d=bytes.fromhex("2387a3c38e4b4e70e281449b7050ac0a78e669e4081895acb2dbc62c53db10b6"),
        skeyid_a=bytes.fromhex("a9fed6feffc21f1477a3534a5fba9096982b115a6ea019856598a654854868f9"),
        skeyid_e=bytes.fromhex("f7384a052e5456cef9ad2170be8235113b647bfbd42e100d7c13c72b0f610378"),
        enc_key=bytes.fromhex("f7384a052e5456cef9ad2170be823511"),
        iv0=bytes.fromhex("fa6fa1882d7f664a4ae1707327374b61"),
        hash_i=bytes.fromhex("6ef464f6094c169dd1807ab4eb9d811d9577e5dfd27abfb03ecd23d554271599"),
        main_mode_5=bytes.fromhex(
            "b6cb63c3f9213e349f42de1568be7cea05100201000000000000007cc3d89e67"
            "851d27f01a43f3f82e305508416d0b8f529a9d9fe51497ce543b14e75784f1e7"
            "34cd053b6fabbc97ebfea4b6d29df1c57cf3eacc7ff28f6e3bee504e1a15f753"
            "97d1b06fb0087f9d5a52de862a2a539818f31c960c47ea2a2aa38a19"
        ),
        main_mode_6=bytes.fromhex(
            "b6cb63c3f9213e349f42de1568be7cea05100201000000000000005cb9fcbf0e"
            "b43af6bbf0155249e9098c050b009d6d741a5cca13cdeaa151661cb4da9254be"
            "649068dbc620c5e422f5642c28b3f6919193fa3c766b0fe4853a5d9a"
        ),
        qm_message_id=49297675,
        qm_iv=bytes.fromhex("683aaeff16a0f3991fc4f6b93d8ca4e6"),
        quick_mode=(
            bytes.fromhex(
                "b6cb63c3f9213e349f42de1568be7cea0810200102f0390b000001bc9e10b4b5"
                "f3065cfb8b63c9eff6de3d15e996c9810c0902367208812384655e796fafd02a"
                "ca6678c785a00b6178e904521ae16e58f3f80d6a415a7f952e01c1a6605336cf"
                "5817b93152894b4511fadc6495859f5c1e1f131f5c22cc86cb5dae693f0b6147"
                "34a6f429e6073aa00484ea2e826212d7b1cef6e605d8a8ace2e8203a14e0959a"
                "925f6967d0820209b5b2119131fec59715d79760b5b142fa80fedf093db5c4c1"
                "27b9ccfd684375ed75ed8bbfcf83beae8377eceef4affbbbb7da671b3e272434"
                "ff0f30df9282d81d21136783e0b2e318ac8a5d6428490bbbb8559570c9234e5a"
                "d849f0ad9ef2e15de48a18b2db76263c2081a2148c498df18b2d61fa4404f0ee"
                "e68ca80ace19c6f88f47b61f839dc012061def450d622e0e9c7014a70b8fe732"
                "4a9e0fe53c71217203ed9f8d1fee35456c29866ec26f4a04e55f0dfeee756276"
                "049f614d0dd9a075483dd67c75e11af383da197f04b3e0a2570267d4970836a8"
                "75a30b63365c5170af396f113635d8505f3cdf2621045123d0f2d1cb72c339a2"
                "136d94b6197434c5ab51f41f69a4bfc1fb2ab45e672c54df0ad587a9"
            ),
            bytes.fromhex(
                "b6cb63c3f9213e349f42de1568be7cea0810200102f0390b000001cc14dbdcc1"
                "d9bce7736528635fae209eec22b8f8ff6503a36f7d81cd924cda97f271bab136"
                "d1efa19e1cdbb658c5b575dc4b9b77df6c3883ef7edaf47e13521fd6011b7dca"
                "1a8b4087489fce707541531bb55e7b49f7731392dd1291e59e5010a0c6ff62b3"
                "b9ecf8e4f518f4161aaa6f39132b91e6cf458d529fe9cafd1f6b5a2404928bb7"
                "c38bdce3a56996692dc4bdc4de6e28543180f92663f2e5ba9e1fce5058054bf2"
                "4c70416b4508bb00b9c29193c545e7efa3fcd47454be57b2505ef75c34245fe0"
                "41d7dab69639beabf51bd066e65d033c97e7d93764b720ea37333a9d6ad3d12d"
                "9593bd21685100a8b9367ea0cb598b6a960028c9af1637754670cff61774f5ed"
                "e3838c4719210fabda6197189217f5563423542c62df3a31cd53c85e1b66dcbe"
                "5abf806734059eaa3ae9ceb7c3db8725bca179b3c5621009ea01b8979276db48"
                "5d73b9bd4bece535b34000968bde7eebfcb9486d1f8c2f97f713277106ebb91f"
                "fa77ae5f62567fc3717e7184385c02d8c98efec49807c90e1647e7331035621c"
                "0d89d430230ff209eba1b43c4f45e68ae91553eefa1aa063599d070109c1c0c7"
                "98736fd73c6466b7734c94fa"
            ),
            bytes.fromhex(
                "b6cb63c3f9213e349f42de1568be7cea0810200102f0390b0000004c4eb5ce6f"
                "6e36950efa8f0e2d2e1969a5aa853ed54535af864c8e5f4166e1ead545315ce0"
                "c1354f81f9f8e58d2d62e80c"
            ),
        ),
        qm_hash1=bytes.fromhex("3a80787cb38361efe6bc9f5de6037305f6ecaef2ac745bf230b88e287de154de"),
        qm_hash2=bytes.fromhex("17dcfa7ad100b35e9dfbb3bcdcb28b8900e9b9800c38616cb61fe67bc599c0ae"),
        qm_hash3=bytes.fromhex("5f0779ffe056e3ee72d9ed4d3f2fa67f18727574111980c20fa9efee1fbc3276"),
        informational=(
            bytes.fromhex(
                "b6cb63c3f9213e349f42de1568be7cea081005010b8749e70000005c659ed15e"
                "90aad8e2003c78e26c7bfb172ae7996ed501343b031121000960b8f69bb75ba2"
                "3599be7d853f36b844c936a5845a968b23be03c9c65769172a58bfd9"
            ),
            bytes.fromhex(
                "b6cb63c3f9213e349f42de1568be7cea081005019ace73f80000006c8018399b"
                "caab05ff12d340403e6b1fa81107d47e714b4996ea6944300bfe1bf1f11b3dff"
                "6c6b7508fa00dda7fa76376a181ce34b6aecffb774ecf4172f4f72c49d3a05af"
                "6b342623a04a04cf659042dd"
            ),
        ),
        g_qm=bytes.fromhex(
            "aed499398da483ecc10f457a4c4dab691480c71c04f84cbc3ef5cf01b41d6a1b"
            "2545d294b47c4675ff86c08c797ad1c604c53a9e96752d7572051e7b2b8ac070"
            "b06f4362d33c74f02485012fba8ebe1e01d1216898e6f1dca5c5ad327d11a8df"
            "3b06320fd00a5e6feee4ea3858153237d954c6f91ec1b594ccce8266d4e24b2b"
            "a7f5843161407227c5fb6c038c58cdcf4d578a9dca37aa42ad59a781befbf280"
            "adf56d092c0217cfacb3a8f2bb93aa70c6f6451040ea18cf871db42d9c153362"
            "d412c2ee7fb1e94da2d23b23563dbf3dbc097014b34eb1333b53142f980d64db"
            "2f2c7e4c5f7b99c526df73b4a1d392298c520607f4b7785c49fdea90d97c1da5"
        ),
        protocol=3,
        spi_r=bytes.fromhex("17e90e1e"),
        spi_i=bytes.fromhex("25f6dc6e"),
        qm_ni=bytes.fromhex("a0a7f00ebcea8f68e1b03ea9d8814736e65cd506e6eb6888c35c611e4cb96a54"),
        qm_nr=bytes.fromhex("7cd38dd0b70eec50c1dbe29e298d6dd6d04539e6eca2f920e861c57e4c42bf6b"),
        esp_encr_i=bytes.fromhex("21af8b96444feb0ba9ad2dfdacc953c9"),
        esp_integ_i=bytes.fromhex(
            "0a06b508684ef0d71f99540f7af0a917325c611dc2758eb7901e64243c31d071"
        ),
        esp_encr_r=bytes.fromhex("06e6431f7a8268494af80178ce69bc4c"),
        esp_integ_r=bytes.fromhex(
            "977e507a0ba09cfcbc87f1d47b8af603898fb937c6ae77136be1174ac276d068"
        ),
    ),
    CharonVector(
        case="psk-aes128-sha256-ecp256",
        ike="aes128-sha256-ecp256",
        esp="aes128-sha256",
        hash_id=4,
        key_bits=128,
        auth_method=1,
        psk=b"vpnfleet IKEv1 vector pre-shared key",
        icookie=bytes.fromhex("a0594976e5514bbf"),
        rcookie=bytes.fromhex("7d83daa7dcd61a86"),
        ni=bytes.fromhex("c37cccb48b977d0bfece5206c13a23d250bbd4218e45c3006b8942b97710f64b"),
        nr=bytes.fromhex("d3e143ffdfeadb78e3a8a3e153c1aee6b1b533cdecae7e046d38f3f6d58557dd"),
        g_xi=bytes.fromhex(
            "365e12d35a13591a0e6ade9f7ccc15290d30a8893e5d729d897d45cb036ac23b"
            "14f6372112e5ae3a71b09cb7057641b63148df9ddab5a24b66fe52bc27e94519"
        ),
        g_xr=bytes.fromhex(
            "df2125b4c60095e2bababdf8511a76862720531e4efd0e36a2b758f3e77ca415"
            "5010ebeceea3ff9609e7387c6fe62d3860b2fdda149396960740f0bbec567a67"
        ),
        g_xy=bytes.fromhex("86bb1b2ec0d4da791728414d21493ce697c115ff70d41512696ec9efc9fd11a0"),
        sa_i_body=bytes.fromhex(
            "00000001000000010000002c01010001000000240101000080010007800e0080"
            "800200048004001380030001800b0001800c0000"
        ),
        idii_body=bytes.fromhex("020000006d6f6f6e2e6578616d706c65"),
        skeyid=bytes.fromhex("3ef4753a2ce96ad129d2e3c915c024f7747adba05394d27df2ceb9cd5b2166de"),
        skeyid_d=bytes.fromhex("e977cc265c85491e1fa95135bba2a5510716b1601e369bebbbeaadae7446f960"),
        skeyid_a=bytes.fromhex("83264c3e98cae0f35da6037f901fbbc5fd19e28ef3f12ec08d3566a0ce4ba365"),
        skeyid_e=bytes.fromhex("a81f36d5dae63e40dcbb76065ee4201a2bf39eb96479b23fbb3fa32843964b79"),
        enc_key=bytes.fromhex("a81f36d5dae63e40dcbb76065ee4201a"),
        iv0=bytes.fromhex("ae3f3b71ebe383dab6cb7f944119b0fb"),
        hash_i=bytes.fromhex("e4d20a99b35230db21fc7160c96ddbb9ffd94b9e2fac1579236d98fcad71d2a7"),
        main_mode_5=bytes.fromhex(
            "a0594976e5514bbf7d83daa7dcd61a8605100201000000000000007c40ca59e2"
            "0863cc21a9f0c46ab186f9c4882fb5298746f3edb68cbf43b05338ac7ca491ac"
            "e09012c93dce822922ac58c2795a8838d1b445c83b39f81733b796e4e9978bad"
            "0d7095b69c7db92ba4aee97674f6ec46a3c8132bad0c48df2e8c55c8"
        ),
        main_mode_6=bytes.fromhex(
            "a0594976e5514bbf7d83daa7dcd61a8605100201000000000000005c5145fdce"
            "a90470b8b026ff8ce66d7e70940878f8081db1297d2b9c67640e98bb439ad93d"
            "3a6135a5f766457e3710c1d50872d636a470944bafade56981e6aaf8"
        ),
        qm_message_id=1223173953,
        qm_iv=bytes.fromhex("d06dc490b875d6314f9c2a7d9f18db90"),
        quick_mode=(
            bytes.fromhex(
                "a0594976e5514bbf7d83daa7dcd61a860810200148e82741000000bc12a5d110"
                "8d809a3d2b00d74f186fb9b6f8f69eed054eff2359753c7f216dddcd0174f790"
                "f04a2488328f93a56ecb0997e86285435f3a368be7f6e03b63d465524e79b0c6"
                "12ec271ed45697eb19c3d78a54b61a28411d3763d2e19fa8ea7ea6adf3256f73"
                "a868520ca711e77e645baf6dd33b01517f3e30dde70cbf57efd7be949585fe55"
                "dbb4e133d296bcb91ac42c9edcda6175c1e8158fe0f8f89852064299"
            ),
            bytes.fromhex(
                "a0594976e5514bbf7d83daa7dcd61a860810200148e82741000000bc8a03ffbb"
                "d7166bc472b671c77320c0dedb8df93bc3aee0169989e6edefc2adb8dc96e5e3"
                "bbd3468835b6eb7d1230bdc8b5058d0c6cd9294fc3551c4ed2fb880cb6eb58fb"
                "27cbe49dd4f105cb27093b7528b85a24068f587c9c261a5e2a90aaebcf38819b"
                "4d53e5b4c039bb9dd0838a8eb5b5459eb012e8349fb6df8a9453993e0248b2a8"
                "8dca5eaccea349756c25a126f9f9d2b3c79cf9c3d1985e058604e37d"
            ),
            bytes.fromhex(
                "a0594976e5514bbf7d83daa7dcd61a860810200148e827410000004c504d88a1"
                "336b534e2679b31f10a603545c1481dc21c03cb3d6e669dc3abc6d442c250fa0"
                "e3f74b7975713285e4dcbe34"
            ),
        ),
        qm_hash1=bytes.fromhex("00898788133d90de30211bba9c92524247542fae6971e0d23a0de5083dabf5eb"),
        qm_hash2=bytes.fromhex("d9a9ac5f4a613ffee6cbbeb711db3131bb933974cf176eedf80f91e6f170b33e"),
        qm_hash3=bytes.fromhex("72cc1943398b80219c59b52c515fe0329340122ef61a004ccd9fada66f452f5b"),
        informational=(
            bytes.fromhex(
                "a0594976e5514bbf7d83daa7dcd61a860810050198b441ce0000005ca3b2f313"
                "1306aa06b7e620427f0a966d0edf026a6ab7070e0844a8718cc67c07c9fcbd64"
                "0c3c1731985717dd44a7f1a2b30fe1e9c878fef8521df08122393635"
            ),
            bytes.fromhex(
                "a0594976e5514bbf7d83daa7dcd61a86081005019d89822b0000006c1931861e"
                "cf2f4e689b3681bc172db60d2bff112e49b31e58c767251aea89938d7250b1fb"
                "66b30725a0a0f35a7710d3ad1643594d035f8118bb88bb326095c73dccb432a1"
                "aa3e0a285eca3c92dcc1c7be"
            ),
        ),
        g_qm=None,
        protocol=3,
        spi_r=bytes.fromhex("c50b79e3"),
        spi_i=bytes.fromhex("be1ccf95"),
        qm_ni=bytes.fromhex("f69bbb181fc1a4d979b2c8cf39547c7be7a8872248d544bac525698a803ed66c"),
        qm_nr=bytes.fromhex("a340ba2079ea78cd0552044196bdee15c0cb114fdab151cd5d3d94efcffbd263"),
        esp_encr_i=bytes.fromhex("c0ac11cdebfc05ad910fc9f00f74dac0"),
        esp_integ_i=bytes.fromhex(
            "f83d325e3f34e873655dcb0916bb65945ede36b7c0a90a03e1aced0f4c4c7e8d"
        ),
        esp_encr_r=bytes.fromhex("b37a29295d8187a43a3e84ab83d52293"),
        esp_integ_r=bytes.fromhex(
            "826c9fe1aca7c09b901bf09c6957c395b771a4728f58b6510bfefb44529e753a"
        ),
    ),
    CharonVector(
        case="ecdsa-aes128-sha1-modp2048",
        ike="aes128-sha1-modp2048",
        esp="aes128-sha1",
        hash_id=2,
        key_bits=128,
        auth_method=9,
        psk=None,
        icookie=bytes.fromhex("4228d810b4d2bc21"),
        rcookie=bytes.fromhex("079b1103023c84f8"),
        ni=bytes.fromhex("80bc23d60466dae4c04f9776ff2031542c526c63887aedef7c1527bd0050781d"),
        nr=bytes.fromhex("7fd7a51d65810b5ccbee8925070a7039a02010c3238f081745daeab04667c498"),
        g_xi=bytes.fromhex(
            "22c98de4c95fa05844a7e534f02c8820e7534fce5f30d94e707910f09abb20dd"
            "89a89336c21e198d4d100b1121005d6f26b129f2119b7b44d334c9cd31b4a986"
            "b79f1b19d5a7d3c440d596892391cf571564fb4487705d711422a643f14d8285"
            "5c1aa61e1f4828261eb80ce3ae4b008bf4640923f3839e5bd2f59062869dd984"
            "05ff20331d2bfaabeacdf412b1c819839666e74e87f30b6def9804811cb034c1"
            "60dacf4bdd0763c990d24071d96f57baf6c456362504b1b77736527febfd1a64"
            "3b51adf6f3d5330305785a2dbec54da2f0c922286f389ea6d3bd89418f44b9c3"
            "251ce59535e20d353c30b050393b024089f6dae9c07de425d16ab002f97830da"
        ),
        g_xr=bytes.fromhex(
            "3b6bf3f7b5bcdef020c9b842e82ad9ce383e469301e3defed44bd7daef8c6ec8"
            "9d0a5c251f7735a2012bf2566a3df3845ae3fb0cbce30ab4e3cd8aa8b6e0c68c"
            "aecd0e35e7ee70221ce8d6a5fcec45df8e1ca943d80ebc16c7d4d88ef5e69edb"
            "f9a15dc665d116a2722e9a812e6290634a6d6a38942da4f985d993b4b1becea2"
            "790acc8675a39ef6ecf9e51be6d20a6897f4933d4374e01f5572718ea6728510"
            "ec735b792f552cfa4454b9485f9e9cecca55cd951ca4fdaa75f866b5a8c6b95e"
            "5324e6a506237cc2a894ced3636c11a43f054c46822203c3978bd4d37ec1489d"
            "caa92b938ec5631bf0530cedc581af9fb2b10bc8758ae25c55bad6b4504f1134"
        ),
        g_xy=bytes.fromhex(
            "14d5eb9475e5f9a7a8b3997f7771cf1d8ba0e85babcdb964911192c625184652"
            "658acfc6597c8883dcf9d2bbd2d0d598bb8d053c1e792ed02d2231e701562b55"
            "5a9391088518fa8c92954b0865f098373b16285858f4c1be1740765e2576294f"
            "93f47e8fc8adfe8ce933b3d2b4ebcef94efda9eb4c9f0ff058aa359fc38c120d"
            "fea281b4759b696cb323ec109507fd6e65be4de05b295b5214996fb50a1d68d4"
            "d8b6bad89404c2a160d75f27383adfab516e1b66a2aac40bcfa1a48cdb504b0e"
            "9464c8c48f13670de10678accd0cf8635acc8cb55e069647369b54d4b50eca0f"
            "2e82eb120905f601d0ae11bfe92e44a8f096b788d7472cbbc62d95edbd36b94c"
        ),
        sa_i_body=bytes.fromhex(
            "00000001000000010000002c01010001000000240101000080010007800e0080"
            "800200028004000e80030009800b0001800c0000"
        ),
        idii_body=bytes.fromhex("020000006d6f6f6e2e6578616d706c65"),
        skeyid=bytes.fromhex("2fdc1500bec069edcdc9ed7934399004e0dfe153"),
        skeyid_d=bytes.fromhex("006a6c67c8ab8ae42ab01342e8d4605ebcfe6322"),
        skeyid_a=bytes.fromhex("b27c253d3fa6cc5a1e72f5e92112b800e480cc33"),
        skeyid_e=bytes.fromhex("c533f5ec8c18eef08745f80495da2241a87cb492"),
        enc_key=bytes.fromhex("c533f5ec8c18eef08745f80495da2241"),
        iv0=bytes.fromhex("a6f38d9b52b8aba73a2454490abc0a53"),
        hash_i=bytes.fromhex("cfe9ad1a89adb164265e181d23b93580acc1ecfea78a2a22b89bfb9b67bf93e4"),
        main_mode_5=bytes.fromhex(
            "4228d810b4d2bc21079b1103023c84f805100201000000000000021cbea96510"
            "6b20488b266649ed9e9e2bf4bcfe5ec54ac6d65b0818a32ba6f416ea14b9160f"
            "d6e8d1d07dc954ea81bd8cab5fa4cd142487549c0180cfa31c0c85c5df0493a0"
            "a85c8ec74fbc085b92bd77cf0f3815bce84dfe71db22a553877399df4089d8aa"
            "026cbc020a4317486a728d2448bc8fc05a5d53ecdbde2ac82ebe55e6d8432225"
            "4e78db58a3d889eb1d4b39e7a71d15e86f051086ec01812bfdf27068d837c0f3"
            "d032191195a65a88cac77875478c968526066fb22aabbce81c476d118e8526b2"
            "8f13e750733d214e90337f99b3ccfea6aebf29085ec093015fb2a4fd14d7ee29"
            "1c212689266f23b9a0547619ec6f14e3b6d4feb85a0857d643e42188e1a4a1a1"
            "c0ff6feb1e66fa7e6353bd42f2a4305dbeab6211c640e7fecc50f6c404b22cc1"
            "bef2856f72a16c2991723ccd36a077e817ef70f69da1460036246b7be033cf21"
            "a53762e962383351393a75622a05ffce1ee4a2b53aa17e0fbf3ca8ed22ddaaf2"
            "b47526bd8ea76153730c65d7296740b962584af8a19144969fd7e733c5be4091"
            "a3ffd04738f54f8536f496d772a4e9a11d4889bfb1b99dac604d0c3efd703519"
            "5cbe769f5aee3cf183d9aeedffcb9986429043c7ac07745f916552f0e2428ba8"
            "18237ac90237ede3bb7ee11a0d058f631125d159e55045f954809669c7d3c17d"
            "10894f4fd33a48f73d408ae590cfead21aa65fb788dea7f252f16b25"
        ),
        main_mode_6=bytes.fromhex(
            "4228d810b4d2bc21079b1103023c84f80510020100000000000001dcd940a8a2"
            "2796c7a5c66f7cc8e72f445289b48826dc6cd8905993ad30a6b68a1c7422ab4e"
            "ea04e93614243eb0502eb39c35c413d71fcd914ae31ef0c368c0ea29de90d9b9"
            "2188b4dba10840a1e1f6164bec8c09f386ef761a9190900a75a425fe05732825"
            "a2c84bd81c1be8415fb4e252338609fac357019f49c74b888aaec14b7f4dc5a1"
            "6749ca552128abe5e2d4fa92e7bd96353ff4ad3034be2f54abd780a3cef2636f"
            "70f4aed232b0ef10b2511d62d6c97d293009adbbf0942dbb73d5bf8572c84a04"
            "95a767547be1cddaa26c75dccaa5ca3a3632a70dae31ef819ad0d81e7e212989"
            "f4404dc22150bea87c90a91f7732d4c798893b62f9c0ed2d9ca87decee90bad1"
            "84a4bc653a26d36a6b155ec88f8be225a200a2298870c96a5bddaef0d45612ad"
            "57b73d39b7f85f9655ea9b692af3c58c20288e0c4c970014b29154a3ae7e57dc"
            "66b89c3d18aedc9fe616f6eb26289d255f6a9c8bad328b90652d7397368a71a3"
            "859ebbf3f4e8c51d1d374157f7995524ee32aab8181b94daf14aa4e019ba1d2b"
            "391eb4b7159ac098d09ff75919eb40d5ae651fe669f35327d4266b46ba7b2f55"
            "719239e30c75eb60c38a9d31fa2b435dba92514beb0f91bebd6cb774"
        ),
        qm_message_id=2814561117,
        qm_iv=bytes.fromhex("1e0ca1f47aa8b52742c77e5e4ea2337e"),
        quick_mode=(
            bytes.fromhex(
                "4228d810b4d2bc21079b1103023c84f808102001a7c2cb5d000000aca280b416"
                "5bcc03c32500846f1a3b2a9a1edb2b4c84d196d09b7cf0e88f89319ebecdba6a"
                "2475f601816bc100e6fec3c591a6bc09310ad64fc9050adb01e1e476cb4b8aae"
                "e6d9f80fded698e6408c6b9ad5ad2ea549e7e999485498a3fa83af9bdddae0dc"
                "cab84b1d97aee0e65369db42afe46e6100c5dfc066e90da0bd4b8583cdbb8fc5"
                "f71d8e35f06411531983d228"
            ),
            bytes.fromhex(
                "4228d810b4d2bc21079b1103023c84f808102001a7c2cb5d000000bcac7f8c5f"
                "159cfac14e5d61b73226dc5eb2ba89f97bdb87eaeae199aee2e9c486375c7823"
                "857c02557f5115bc5186c4c1a0495bcdc1c03b432aaa4e0750bc98e0c458543e"
                "a14ffd0f052289320eafb27ee7a39a6bfee57685b289deff8f05d53ab2449436"
                "15e2d44f70ac9a82ffc2693ea2969fe9f44dc1eb0f365f794005a12c58ea5ecc"
                "fa8cf10e15808bd9ea71c7fa828c14c1a3eb58e0d9cbd3e0c140db0d"
            ),
            bytes.fromhex(
                "4228d810b4d2bc21079b1103023c84f808102001a7c2cb5d0000003c9ccd1acb"
                "3b0a43304957a77c11f8a4eb4c6c59e9016f6bb3467d193ac9b793bf"
            ),
        ),
        qm_hash1=bytes.fromhex("18414d736252c2d72bb8d6aac4dcec706d73520c"),
        qm_hash2=bytes.fromhex("7735b189aec9aa722f86ef4ccdc2d789d518a95f"),
        qm_hash3=bytes.fromhex("ab85aa26827a042bc95bc2839592f7dc68c96e24"),
        informational=(
            bytes.fromhex(
                "4228d810b4d2bc21079b1103023c84f8081005013689bd4f0000004c00dc2a30"
                "5cb5ba068a635d5d4eb8a188efb92d64d484661362e425875165241bb875ed79"
                "08b4cf0a7b6bbddc47e16ff8"
            ),
            bytes.fromhex(
                "4228d810b4d2bc21079b1103023c84f808100501a6fc79900000005cc78a976c"
                "676037e7a985f1108119d9957738b423a511a80f3378d13e00b53b6c1d3ab506"
                "ca31401a707aa0d5ea8a5496fd90f1389322ee7972801acbec3bc59f"
            ),
        ),
        g_qm=None,
        protocol=3,
        spi_r=bytes.fromhex("3d050bd2"),
        spi_i=bytes.fromhex("3457a008"),
        qm_ni=bytes.fromhex("748df6f2b664aef96b8323b0cb22a146e1d196cb988faa5182e0828309e96524"),
        qm_nr=bytes.fromhex("3efcee9404f3684ca5e5d5151ff740d6952ae74cf25420127a55dda35b83448d"),
        esp_encr_i=bytes.fromhex("1e367435c820e9d8a756c679e9ac9d72"),
        esp_integ_i=bytes.fromhex("74e5791e0fb14e310bfffc404ea9e2766ceb5fbd"),
        esp_encr_r=bytes.fromhex("a8d154115883093d7230977d3f508fcb"),
        esp_integ_r=bytes.fromhex("79e1e2693dd7b182a438f49ef215f96fa58baba3"),
    ),
    CharonVector(
        case="psk-aes256-sha1-modp2048",
        ike="aes256-sha1-modp2048",
        esp="aes256-sha1",
        hash_id=2,
        key_bits=256,
        auth_method=1,
        psk=b"vpnfleet IKEv1 vector pre-shared key",
        icookie=bytes.fromhex("681f38dceb19448d"),
        rcookie=bytes.fromhex("d86ca68645090bee"),
        ni=bytes.fromhex("987a6b4b190a2f61b87167e624ce6588528f2ff54ec356b93a44f01c4f090f48"),
        nr=bytes.fromhex("ba261c00831c48516e5bdf0565f2739b49b1c1daf16987136d6a6d3cf8cc63c0"),
        g_xi=bytes.fromhex(
            "acd9f77c143f3cc46439c3410b80778019a44c6e2534a4b05ec6ac85438dbb97"
            "2c7671d04f1b65a64c0071216747b5e438956d4d5a1af8b30fd1e58cabc9dbaf"
            "36a88902e6133fba7bafaaf68e158e25777c9f48babff3ff9e6cf86b6007e209"
            "5295dee5065d15e4c768a45fefecd3d7279aa2f2b12fa084897d1f30bb122216"
            "e9ef6494519cccb6513bbd125aa08e2dd01bb2aa17fdbc766b11a990e443a2ae"
            "db243c57b5456ffc439b7bb89c8015f9543d3ff8feba0846626a893e576b4b9f"
            "8467a74aa756e7a1f3ebbcd49b1a4aaa6cf3e9ec08dfab4875ce3f44f7403871"
            "aab92211782ab30dec275939c56df04bbc5a88e400e91f790d5366b4125d92a0"
        ),
        g_xr=bytes.fromhex(
            "127889f8d8bf91ad0d29a1c4150bda1890f186de6ab408428d1005d61c77ff87"
            "01449bc74bdb5ef9ef6388dabde45e324a5bffe6a4860fd9ab16f7ccabe00ca0"
            "4311f384c9a374fcb8b53bc9c487e0c4ea1306dab5c19642d1fa24fd0002a3eb"
            "6b33fe0c52f8107d3f1be1045d8cdc1aad5d6d3d87d3c9e1ea8bc116516babdc"
            "b54147dd3b193c1baced6f88318b53fa7d086c656313892fb3c5e3ad8dcba936"
            "59bd2c631eaa2573830d5d56b7ebbdddb6aecf172f840eb634bfebc79e2a147c"
            "dfc30e7cb600c2c7b3d200d10b98756b993092b1216787966fb9baa253e824f4"
            "e89bfc2c792cb77d7a02c5b6c4ef7607fd36e3070459dfd54f832f7550d14036"
        ),
        g_xy=bytes.fromhex(
            "d46afafd340db046a96f6d9f2aa688e85c55ecfb729022685fd694271ef7b57f"
            "5e55285a21de8f225f1961bccfb066ef24a1c29ec71b6d967bf75d92989f06a4"
            "c75fbe860167b7f7a542cfb567267f3985bfb7686ef6e2fb783d4d837f3ed81b"
            "3e4e4ddbff9a63ff2d0b4b06fff7d0dee849c0f4499362b61507737c725e5657"
            "6cb2ec1fcc4a3f34ffa14ef38a7779032c04385f5102290daa6da4797cafa03b"
            "235b4ed6e250b5669fe8d961835017720e93cd55a64abcf9e88b9d3b0668b0f8"
            "2983c5da29fd254e9c8a4ca9315f8b1c0e67726ab29c6e45ec016391f1738217"
            "8b5a9152c45c667709285e8d49c5eb2aad98c78a18cf24766f527143bdd4944b"
        ),
        sa_i_body=bytes.fromhex(
            "00000001000000010000002c01010001000000240101000080010007800e0100"
            "800200028004000e80030001800b0001800c0000"
        ),
        idii_body=bytes.fromhex("020000006d6f6f6e2e6578616d706c65"),
        skeyid=bytes.fromhex("44a42bacf96ba3dbdf4819eb12e331b2cd636fd0"),
        skeyid_d=bytes.fromhex("0dafb59696ef55e7b3a3b045c5c0f806ab79164e"),
        skeyid_a=bytes.fromhex("cab16e9ecd133bfabf824e90c2e9ed2866263f3a"),
        skeyid_e=bytes.fromhex("92edc3053dd0c1c5aaf5bc0253d8a8243882c0a1"),
        enc_key=bytes.fromhex("aee8a5adbcfc1488866c90c4d1f41dfe481bd399cb5021ff06abc2fb731d40f0"),
        iv0=bytes.fromhex("613aab5d8b53e37d9aedf47d5bf18f45"),
        hash_i=bytes.fromhex("52d1da5620a623304a3c15a8544c9fc54ed913d3"),
        main_mode_5=bytes.fromhex(
            "681f38dceb19448dd86ca68645090bee05100201000000000000006cb7133ce8"
            "d176bb74599c013adae0f2789057f5ed128926a3fa29f4908b88a99ef9f1043e"
            "8d1b646454086027be98cf6b0dc9d5597b6d047e705c4f3f7dfcf263eec1ffb2"
            "c89462a545b38dd3912855a0"
        ),
        main_mode_6=bytes.fromhex(
            "681f38dceb19448dd86ca68645090bee05100201000000000000004cb93f19ef"
            "f2e78b795c15d268cbf1e4ca8db937e75438df2916030bd39994f18e1b749d28"
            "b79074e45d50062a12462141"
        ),
        qm_message_id=733124023,
        qm_iv=bytes.fromhex("b862a8d72b3c8cf30f03ab3861838c37"),
        quick_mode=(
            bytes.fromhex(
                "681f38dceb19448dd86ca68645090bee081020012bb295b7000000acfdee9159"
                "3c4630eb81ae3f4ece788534acad1aa2d490e506889b1284c8e527d3900f8561"
                "e07c12adc7c7e8ef8da38620547ddbefbfea7c9e89e5e6e7f1325c85062d710a"
                "01c5b6efef4aeda9f8bdf1e48c5a35295a684af5c97602abaf30298d1e1e47b8"
                "14f8bff353bf81a9a77ebe23d761658f534f30182018b88856df71903480b235"
                "9a38e387de65c300d91c170c"
            ),
            bytes.fromhex(
                "681f38dceb19448dd86ca68645090bee081020012bb295b7000000bcacc6442f"
                "641f9d078fa1550eb96346b7cc220eec23c3f18934c5a1ddb744895290e4d232"
                "3ec0bf5d2321de16dbdf6a7e912a9a27e3d86fbf95f665b9447fd2d93d341b1f"
                "4af1c4a6fb88092e48fa03ec1939f120e2aa85071f586ad62ca97eb6667d016c"
                "32fe7ace651ded9a2788d7828f722044186f6890a6592a5ef45888f5b16645c1"
                "68a99e23d2e7e674263afcb07f5fcd0bfe5ae0a91b65ada03fb402f4"
            ),
            bytes.fromhex(
                "681f38dceb19448dd86ca68645090bee081020012bb295b70000003c028b4985"
                "74389ee3550134ef0afe1ac2889d7a95507a72b3f3a846f86f7e97f9"
            ),
        ),
        qm_hash1=bytes.fromhex("eb29e1d08b4c5311be00e3141229d9bdc2bd8807"),
        qm_hash2=bytes.fromhex("d5b3375dc13e7b3fdd30276bd50ed4473994ef76"),
        qm_hash3=bytes.fromhex("8a23acc08bd8a499211bb867bc9d25937f6a92e5"),
        informational=(
            bytes.fromhex(
                "681f38dceb19448dd86ca68645090bee081005015ee1f60f0000004cb6a45700"
                "a4364be5ddc46a9a61943f7b0042defe87aa96f0d9dac979a8e2bb1dc186ed64"
                "8d15476ac9719b5c75f8fcbd"
            ),
            bytes.fromhex(
                "681f38dceb19448dd86ca68645090bee081005017ba7429c0000005cca62d928"
                "bd472fede5a068ffd4ccba20ee6942ec266eb7da334d1f5d5d9fd9f54dcde8b8"
                "b2257adae18b09bf41f11524420380a9ecaccdc10e7e1037ca7ec1fc"
            ),
        ),
        g_qm=None,
        protocol=3,
        spi_r=bytes.fromhex("4c19167e"),
        spi_i=bytes.fromhex("7559d5b9"),
        qm_ni=bytes.fromhex("d430b2bb745701f851559f1c4488662e992243dbadc0b3a25b03517c2f585537"),
        qm_nr=bytes.fromhex("a58a4b57a2f399ead7ac9a3c7f3c4a98565fcc90462374b78eb2b4a8175a3382"),
        esp_encr_i=bytes.fromhex(
            "6b8bb8ecadf91d1b0d946c237e7732189de052bb7d2f8b87409a406a262d1e08"
        ),
        esp_integ_i=bytes.fromhex("9ca183cc25aea2e03488a7d3ed19e4cf86ea0b12"),
        esp_encr_r=bytes.fromhex(
            "e9ec23b7bb42a83573f306c6a4f0b05e15421c9ce145c0179ba306ffbeb19c27"
        ),
        esp_integ_r=bytes.fromhex("6115ed17876f2e56b3dc50db8fcdabd2f49c516f"),
    ),
]


def _encr(vector: CharonVector) -> Encr:
    return encr_for(EncrId.AES_CBC, vector.key_bits)


def _phase1(vector: CharonVector) -> keys.Phase1Keys:
    return keys.derive_phase1(
        keys.prf_for_hash(vector.hash_id),
        vector.psk,
        vector.ni,
        vector.nr,
        vector.g_xy,
        vector.icookie,
        vector.rcookie,
        _encr(vector),
        vector.g_xi,
        vector.g_xr,
    )


def _cipher(vector: CharonVector) -> IkeV1Cipher:
    k = _phase1(vector)
    return IkeV1Cipher(_encr(vector), k.enc_key, keys.hash_for(vector.hash_id), k.iv0)


@dataclass(frozen=True)
class Opened:
    """A received message decrypted, confirmed and split by the codec."""

    header: IsakmpHeader
    payloads: list[tuple[int, bytes]]
    """(type, whole payload with its generic header), in chain order."""
    padding: bytes
    """What follows the last payload."""

    def body(self, kind: int) -> bytes:
        return next(whole[4:] for k, whole in self.payloads if k == kind)

    def after_hash(self) -> bytes:
        """The message after its leading HASH payload, as the phase 2 hashes take it."""
        assert self.payloads[0][0] == PayloadType.HASH
        return b"".join(whole for _, whole in self.payloads[1:])


def _open(cipher: IkeV1Cipher, message: bytes) -> Opened:
    header, body = IsakmpHeader.parse(message)
    assert header.encrypted
    received = cipher.decrypt(header.message_id, body)
    cipher.confirm(received)
    plain = received.plaintext
    raws = split_payloads(header.next_payload, plain, padded=True)
    starts = [raw.offset - ISAKMP_HEADER_LENGTH - 4 for raw in raws]
    end = starts[-1] + 4 + len(raws[-1].body)
    payloads = [
        (raw.payload_type, plain[at : at + 4 + len(raw.body)])
        for raw, at in zip(raws, starts, strict=True)
    ]
    return Opened(header, payloads, plain[end:])


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_phase1_keys_match_charon(vector: CharonVector) -> None:
    """RFC 2409 section 5: SKEYID (PSK or signatures), SKEYID_d/a/e, the cipher key
    (Appendix B) and the first IV, as charon logged them."""
    k = _phase1(vector)
    assert k.skeyid == vector.skeyid
    assert k.skeyid_d == vector.skeyid_d
    assert k.skeyid_a == vector.skeyid_a
    assert k.skeyid_e == vector.skeyid_e
    assert k.enc_key == vector.enc_key
    assert k.iv0 == vector.iv0


def test_aes256_with_sha1_needs_the_appendix_b_expansion() -> None:
    """RFC 2409 Appendix B: a 20-byte SKEYID_e cannot key AES-256; Ka = K1 | K2 cut to
    32 bytes, K1 = prf(SKEYID_e, 0), K2 = prf(SKEYID_e, K1)."""
    vector = next(v for v in VECTORS if v.case == "psk-aes256-sha1-modp2048")
    prf = keys.prf_for_hash(vector.hash_id)
    assert len(vector.skeyid_e) == 20 and len(vector.enc_key) == 32
    k1 = prf(vector.skeyid_e, b"\x00")
    assert vector.enc_key == (k1 + prf(vector.skeyid_e, k1))[:32]
    assert keys.expand_key(prf, vector.skeyid_e, 32) == vector.enc_key


def test_signature_skeyid_ignores_any_psk() -> None:
    """RFC 2409 section 5: with signatures SKEYID = prf(Ni_b | Nr_b, g^xy)."""
    vector = next(v for v in VECTORS if v.auth_method == AuthMethod.ECDSA_256)
    prf = keys.prf_for_hash(vector.hash_id)
    assert keys.skeyid(prf, None, vector.ni, vector.nr, vector.g_xy) == vector.skeyid
    assert prf(vector.ni + vector.nr, vector.g_xy) == vector.skeyid


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_hash_i_matches_charon(vector: CharonVector) -> None:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)."""
    prf = keys.auth_prf(vector.auth_method, keys.prf_for_hash(vector.hash_id))
    got = keys.hash_i(
        prf,
        vector.skeyid,
        vector.g_xi,
        vector.g_xr,
        vector.icookie,
        vector.rcookie,
        vector.sa_i_body,
        vector.idii_body,
    )
    assert got == vector.hash_i


def test_ecdsa_hash_i_uses_the_curves_hash_not_the_proposals() -> None:
    """RFC 4754: ECDSA-256 authentication, proposal hash SHA-1; charon's HASH_I is the
    32-byte HMAC-SHA-256, which the proposal's prf would not give."""
    vector = next(v for v in VECTORS if v.auth_method == AuthMethod.ECDSA_256)
    negotiated = keys.prf_for_hash(vector.hash_id)
    assert vector.hash_id == P1Hash.SHA1 and negotiated.hash_name == "sha1"
    assert keys.auth_prf(vector.auth_method, negotiated).hash_name == "sha256"
    assert len(vector.hash_i) == 32
    plain = keys.hash_i(
        negotiated,
        vector.skeyid,
        vector.g_xi,
        vector.g_xr,
        vector.icookie,
        vector.rcookie,
        vector.sa_i_body,
        vector.idii_body,
    )
    assert plain != vector.hash_i


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_main_mode_5_and_6_decrypt_and_authenticate(vector: CharonVector) -> None:
    """Messages 5 and 6 as charon sent them decrypt with our key and IV chain: IDii is
    the one HASH_I covered, and for a PSK the HASH payloads are our HASH_I and HASH_R
    (RFC 2409 section 5.4). Both were padded with 1 to 16 zero octets and no pad
    length (the padding fact cipher.py follows)."""
    cipher = _cipher(vector)
    assert cipher.iv(0) == vector.iv0
    prf = keys.prf_for_hash(vector.hash_id)
    five = _open(cipher, vector.main_mode_5)
    six = _open(cipher, vector.main_mode_6)
    for opened in (five, six):
        assert opened.header.exchange == ExchangeType.IDENTITY_PROTECTION
        assert 1 <= len(opened.padding) <= 16 and opened.padding == bytes(len(opened.padding))
    assert cipher.iv(0) == vector.main_mode_6[-16:]
    assert five.body(PayloadType.ID) == vector.idii_body
    if vector.auth_method != AuthMethod.PSK:
        assert five.body(PayloadType.SIG) and six.body(PayloadType.SIG)
        return
    assert five.body(PayloadType.HASH) == vector.hash_i
    hash_r = keys.hash_r(
        prf,
        vector.skeyid,
        vector.g_xi,
        vector.g_xr,
        vector.icookie,
        vector.rcookie,
        vector.sa_i_body,
        six.body(PayloadType.ID),
    )
    assert six.body(PayloadType.HASH) == hash_r


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_quick_mode_iv_and_hashes_match_charon(vector: CharonVector) -> None:
    """RFC 2409 Appendix B: the Quick Mode chain starts at hash(last phase 1 block |
    M-ID); section 5.5: HASH(1), HASH(2), HASH(3) over the decrypted messages."""
    cipher = _cipher(vector)
    _open(cipher, vector.main_mode_5)
    _open(cipher, vector.main_mode_6)
    hash_name = keys.hash_for(vector.hash_id)
    mid = vector.qm_message_id
    assert keys.phase2_iv(hash_name, vector.main_mode_6[-16:], mid) == vector.qm_iv
    assert cipher.iv(mid) == vector.qm_iv
    prf = keys.prf_for_hash(vector.hash_id)
    qm1, qm2, qm3 = (_open(cipher, m) for m in vector.quick_mode)
    for opened in (qm1, qm2, qm3):
        assert opened.header.exchange == ExchangeType.QUICK
        assert opened.header.message_id == mid

    assert qm1.body(PayloadType.HASH) == vector.qm_hash1
    assert keys.qm_hash1(prf, vector.skeyid_a, mid, qm1.after_hash()) == vector.qm_hash1
    assert qm1.body(PayloadType.NONCE) == vector.qm_ni
    assert qm2.body(PayloadType.HASH) == vector.qm_hash2
    got2 = keys.qm_hash2(prf, vector.skeyid_a, mid, vector.qm_ni, qm2.after_hash())
    assert got2 == vector.qm_hash2
    assert qm2.body(PayloadType.NONCE) == vector.qm_nr
    assert [kind for kind, _ in qm3.payloads] == [PayloadType.HASH]
    assert qm3.body(PayloadType.HASH) == vector.qm_hash3
    assert keys.qm_hash3(prf, vector.skeyid_a, mid, vector.qm_ni, vector.qm_nr) == vector.qm_hash3


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_keymat_matches_charon(vector: CharonVector) -> None:
    """RFC 2409 section 5.5: KEYMAT = K1 | K2 | ..., Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy
    |] protocol | SPI | Ni_b | Nr_b); each direction keyed with its receiver's SPI,
    encryption key first. The sha256 case has PFS, and its 48 bytes need K2."""
    prf = keys.prf_for_hash(vector.hash_id)
    encr_length = len(vector.esp_encr_i)
    integ_ids = {"sha1": IntegId.HMAC_SHA1_96, "sha256": IntegId.HMAC_SHA2_256_128}
    integ = integ_for(integ_ids[vector.esp.split("-")[1]])
    length = encr_length + integ.key_length
    assert len(vector.esp_integ_i) == integ.key_length
    for spi, encr, integ_key in (
        (vector.spi_r, vector.esp_encr_i, vector.esp_integ_i),
        (vector.spi_i, vector.esp_encr_r, vector.esp_integ_r),
    ):
        got = keys.keymat(
            prf,
            vector.skeyid_d,
            vector.protocol,
            spi,
            vector.qm_ni,
            vector.qm_nr,
            length,
            vector.g_qm,
        )
        assert got == encr + integ_key


def test_the_pfs_vector_carries_a_quick_mode_secret() -> None:
    """The KEYMAT test above covers PFS only if one vector has g(qm)^xy."""
    assert any(v.g_qm for v in VECTORS)
    assert any(v.g_qm is None for v in VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=str)
def test_informational_deletes_decrypt_and_authenticate(vector: CharonVector) -> None:
    """RFC 2409 section 5.7: each Delete charon sent is an informational exchange of its
    own M-ID, encrypted on a chain that starts at hash(last phase 1 block | M-ID)
    (Appendix B; after a Quick Mode, which has a chain of its own), and its HASH(1) is
    prf(SKEYID_a, M-ID | N/D)."""
    cipher = _cipher(vector)
    for message in (vector.main_mode_5, vector.main_mode_6, *vector.quick_mode):
        _open(cipher, message)
    prf = keys.prf_for_hash(vector.hash_id)
    kinds = set()
    for message in vector.informational:
        opened = _open(cipher, message)
        mid = opened.header.message_id
        assert opened.header.exchange == ExchangeType.INFORMATIONAL
        assert mid not in (0, vector.qm_message_id)
        assert opened.body(PayloadType.HASH) == keys.info_hash(
            prf, vector.skeyid_a, mid, opened.after_hash()
        )
        kinds |= {kind for kind, _ in opened.payloads[1:]}
    assert kinds == {PayloadType.DELETE}
