"""tfx-stateful-sequences: stateful (truncated-BPTT) sequence training in TFX.

Python 3.10 only: TFX 1.16, the newest TFX whose whole dependency set
installs, supports Python 3.9-3.10. The tested versions of every dependency
are pinned in requirements/lock.txt; install with
``pip install -c requirements/lock.txt .``.
"""

import setuptools

setuptools.setup(
    name='tfx-stateful-sequences',
    version='0.1.0',
    description=('TFX components and Beam transforms for stateful LSTM/GRU '
                 'training with truncated BPTT on variable-length sequences'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10,<3.11',
    packages=setuptools.find_packages(
        include=['components', 'components.*', 'pipeline', 'pipeline.*',
                 'kubeflow', 'kubeflow.*']),
    package_data={'pipeline': ['*.py']},
    install_requires=[
        'tfx[kfp]==1.16.0',
        'dill',  # tf.Transform imports it; Beam 2.7x no longer brings it.
    ],
    extras_require={'test': ['pytest']},
    classifiers=[
        'Programming Language :: Python :: 3.10',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
